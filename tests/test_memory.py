"""CUDA out-of-memory handling, simulated on the CPU: the batch is cut into parts, a line says so, training and
encoding go on; the accumulated gradients equal the whole batch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainseg_utils.config import TrainConfig
from brainseg_utils.training import memory
from brainseg_utils.training.engine import fit

OOM = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)


def test_split_nested_batches():
    x, b = torch.arange(8.0).reshape(4, 2), torch.arange(4)
    parts = memory.split({"e": x, "boxes": (b, b)}, 2)
    assert len(parts) == 2 and torch.equal(parts[1]["e"], x[2:]) and torch.equal(parts[0]["boxes"][1], b[:2])
    assert memory.is_out_of_memory(OOM("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


def test_halving_doubles_the_parts_until_it_fits(capsys):
    calls = []

    def work(parts):
        calls.append(parts)
        if parts < 4:
            raise OOM("CUDA out of memory. Tried to allocate 8.00 GiB")
        return parts

    h = memory.Halving("training (unet)")
    resets = []
    assert h.run(work, batch=16, reset=lambda: resets.append(1)) == 4 and calls == [1, 2, 4] and len(resets) == 2
    out = capsys.readouterr().out
    assert "CUDA out of memory in training (unet) with 16 slices per pass: going on with 8 per pass" in out
    assert "with 4 per pass (4 parts per batch of 16)" in out
    assert h.run(lambda parts: parts, batch=16) == 4  # remembered: the whole batch is not tried again
    with pytest.raises(ValueError):
        h.run(lambda parts: (_ for _ in ()).throw(ValueError("not memory")), batch=16)


def test_halving_gives_up_with_what_to_lower():
    with pytest.raises(RuntimeError, match="at 1 slices per pass: lower the batch size parameter"):
        memory.Halving("encoding").run(lambda parts: (_ for _ in ()).throw(OOM("out of memory")), batch=1)
    with pytest.raises(RuntimeError, match="multi-GPU runs cannot split batches"):
        memory.Halving("training", distributed=True).run(lambda p: (_ for _ in ()).throw(OOM("out of memory")), 8)


def test_encoding_in_parts_gives_the_same_result():
    weight = torch.randn(3, 5)
    h = memory.Halving("encoding")

    def encode(x):
        if len(x) > 2:
            raise OOM("CUDA out of memory")
        return x @ weight

    x = torch.randn(8, 3)
    assert torch.allclose(h.encode(encode, x), x @ weight) and h.parts == 4


class Flaky(nn.Module):
    """A small convolutional net (no BatchNorm) that runs out of memory above ``limit`` slices per pass."""

    def __init__(self, limit: int | None, norm: bool = False):
        super().__init__()
        torch.manual_seed(0)
        middle = [nn.BatchNorm2d(4), nn.Dropout(0.3)] if norm else []
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), *middle, nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
        self.limit = limit

    def forward(self, x):
        if self.limit is not None and self.training and len(x) > self.limit:
            raise OOM("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self.net(x)


def test_training_goes_on_after_out_of_memory_with_the_same_gradients(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 16, 16, generator=g)
    ds = torch.utils.data.TensorDataset(x, (x > 0.6).float())
    cfg = dict(epochs=2, batch_size=8, lr=1e-2, seed=0, progress=False, ema_decay=0.0)
    mse = nn.MSELoss()  # a mean over equal parts: the accumulated gradient is the whole batch's
    whole, parts = Flaky(None), Flaky(2)
    h_whole = fit(whole, ds, ds, tmp_path / "whole", TrainConfig(**cfg), loss_fn=mse)
    h_parts = fit(parts, ds, ds, tmp_path / "parts", TrainConfig(**cfg), loss_fn=mse)
    assert "going on with 2 per pass (4 parts per batch of 8)" in capsys.readouterr().out
    for a, b in zip(whole.state_dict().values(), parts.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["train_loss"] for h in h_parts] == pytest.approx([h["train_loss"] for h in h_whole], rel=1e-5)


class Meter:
    """A simulated GPU: each pass of k slices peaks at ``fixed + k * per_slice`` bytes."""

    def __init__(self, fixed: float, per_slice: float, free: float):
        self.fixed, self.per_slice, self.free_bytes, self.sizes = fixed, per_slice, free, []

    def pass_of(self, k: int) -> None:
        self.sizes.append(k)

    def peak(self, fn) -> float:
        fn()
        return self.fixed + self.sizes[-1] * self.per_slice

    def free(self) -> float:
        return self.free_bytes


@pytest.mark.parametrize(
    "free, distributed, parts, line",
    [(20e9, False, 1, None), (5e9, False, 4, "running 4 slices per pass (4 parts per batch of 16)"),
     (5e9, True, 1, "may run out of memory; lower the batch size")],
)  # fmt: skip
def test_the_batch_is_checked_against_the_free_memory_first(capsys, free, distributed, parts, line):
    # 1 GB fixed + 0.5 GB per slice: 16 slices need 9 GB; 90 % of 5 GB holds 1 + 4 x 0.5 = 3 GB, not 1 + 8 x 0.5
    gpu = Meter(1e9, 0.5e9, free)
    h = memory.Halving("training (unet)", distributed=distributed)
    est = h.presize(gpu.pass_of, 16, peak=gpu.peak, free=gpu.free)
    assert gpu.sizes == [1, 2] and est["need"] == pytest.approx(9e9) and est["per_slice"] == pytest.approx(0.5e9)
    assert h.parts == parts and est["parts"] == (1 if free > 9e9 / 0.9 else 4)
    out = capsys.readouterr().out
    assert (line is None and out == "") or (line in out and "~9.0 GB for 16 slices, 5.0 GB free" in out)


def test_head_of_nested_batches():
    x = {"embeddings": torch.arange(6).reshape(3, 2), "boxes": (torch.arange(3), torch.arange(3) * 2)}
    h = memory.head(x, 2)
    assert h["embeddings"].shape == (2, 2) and torch.equal(h["boxes"][1], torch.tensor([0, 2]))


def test_training_starts_in_parts_when_the_check_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "PRESIZE_DEVICES", ("cuda", "cpu"))  # the check runs on this CPU as on a GPU
    probed = []

    def peak(fn):
        fn()  # the real probe: forward and backward of the first 1 or 2 slices, gradients reset after
        probed.append(1)
        return 1e9 * len(probed)  # 1 slice: 1 GB, 2 slices: 2 GB -> 1 GB per slice, nothing fixed

    monkeypatch.setattr(memory, "cuda_peak", peak)
    monkeypatch.setattr(memory, "cuda_free", lambda: 3.5e9)  # 90 %: 3.15 GB -> 2 slices per pass of 8
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 16, 16, generator=g)
    ds = torch.utils.data.TensorDataset(x, (x > 0.6).float())
    cfg = dict(epochs=1, batch_size=8, lr=1e-2, seed=0, progress=False, ema_decay=0.0)
    # the same 4 parts reached by an out-of-memory error (BatchNorm and dropout: the probe must leave no trace)
    after_oom, checked = Flaky(2, norm=True), Flaky(None, norm=True)
    monkeypatch.setattr(memory, "PRESIZE_DEVICES", ())
    fit(after_oom, ds, ds, tmp_path / "oom", TrainConfig(**cfg), loss_fn=nn.MSELoss())
    monkeypatch.setattr(memory, "PRESIZE_DEVICES", ("cuda", "cpu"))
    fit(checked, ds, ds, tmp_path / "checked", TrainConfig(**cfg), loss_fn=nn.MSELoss())
    assert len(probed) == 2 and "running 2 slices per pass (4 parts per batch of 8)" in capsys.readouterr().out
    for a, b in zip(after_oom.state_dict().values(), checked.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # gradients, BN statistics, dropout all as without
