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

    def __init__(self, limit: int | None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
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
