import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from brainseg_utils import train
from brainseg_utils.dataset import SliceDataset
from brainseg_utils.losses import FocalDiceLoss
from brainseg_utils.train import TrainConfig, evaluate, fit, load_checkpoint, load_model_state
from brainseg_utils.transforms import train_augmentation
from brainseg_utils.unet import UNet

TIMING_KEYS = {"epoch_seconds", "train_images_per_s", "val_images_per_s"}


def _datasets(tiny_cache, aug=True):
    cache, split = tiny_cache
    tr = SliceDataset(cache, cache.rows_for(split["train"]), train_augmentation() if aug else None, seed=0)
    va = SliceDataset(cache, cache.rows_for(split["val"]))
    return tr, va


def test_amp_policy(monkeypatch):
    assert train.amp_dtype(torch.device("cpu")) is None
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # T4
    assert train.amp_dtype(cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))  # A100
    assert train.amp_dtype(cuda) is torch.bfloat16
    assert train.amp_dtype(cuda, enabled=False) is None


def test_dice_per_sample_conventions():
    pred = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    tgt = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    pred[1, 0, 0, 0] = True  # predicted tumour, none there: 0
    pred[2, 0, 0, :] = True
    tgt[2, 0, 0, 0] = True  # 2 * 1 / (2 + 1)
    assert train.dice_per_sample(pred, tgt).tolist() == pytest.approx([1.0, 0.0, 2 / 3])


@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    """8 synthetic cases x 40 slices at 64 px: 130 training, 62 validation slices."""
    from brainseg_utils.brats import discover_cases
    from brainseg_utils.slices import SliceConfig, build_cache, write_split_once
    from brainseg_utils.synthetic import SyntheticConfig, generate_dataset

    base = tmp_path_factory.mktemp("learn")
    root = generate_dataset(base / "ds", SyntheticConfig(cases=8, seed=3, depth=40), progress=False)
    cases = discover_cases(root)
    cache = build_cache(cases, base / "slices", SliceConfig(img_size=64, tumour_free_fraction=0.3), progress=False)
    split = write_split_once(base / "splits.json", [c.case_id for c in cases], (0.6, 0.2, 0.2), seed=0)
    return cache, split


def test_unet_learns_on_synthetic_data(learn_data, tmp_path):
    """Validation Dice rises far above its start within a CPU-sized budget (~25 s).

    Measured (base 8, 20 epochs, lr 2e-3, batch 16): tumour-slice Dice 0.00 before training,
    0.78-0.82 over the last epochs. The floor of 0.6 leaves a wide margin.
    """
    cache, split = learn_data
    tr = SliceDataset(cache, cache.rows_for(split["train"]), train_augmentation(0.5), seed=0)
    va = SliceDataset(cache, cache.rows_for(split["val"]))
    torch.manual_seed(0)
    model = UNet(base_channels=8)
    before = evaluate(model, torch.utils.data.DataLoader(va, batch_size=16), FocalDiceLoss(), torch.device("cpu"), None)
    hist = fit(model, tr, va, tmp_path, TrainConfig(epochs=20, batch_size=16, lr=2e-3, seed=0, progress=False))
    best = max(h["val_dice_tumour"] for h in hist)
    assert before["dice_tumour"] < 0.1
    assert best > 0.6, [round(h["val_dice_tumour"], 3) for h in hist]
    assert hist[-1]["val_dice"] > before["dice"] + 0.4
    assert hist[-1]["train_loss"] < 0.6 * hist[0]["train_loss"]
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists() and (tmp_path / "history.json").exists()


def _strip(hist):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in hist]


def test_resume_matches_uninterrupted_run(tiny_cache, tmp_path):
    tr, va = _datasets(tiny_cache)
    cfg = dict(epochs=3, batch_size=8, lr=1e-3, seed=1, progress=False)
    torch.manual_seed(0)
    full_model = UNet(base_channels=4)
    full = fit(full_model, tr, va, tmp_path / "a", TrainConfig(**cfg))

    torch.manual_seed(0)
    first = fit(UNet(base_channels=4), tr, va, tmp_path / "b", TrainConfig(**cfg, stop_after_epoch=2))
    assert len(first) == 2
    resumed_model = UNet(base_channels=4)
    torch.manual_seed(123)  # a different init: everything must come from last.pt
    nn.init.normal_(resumed_model.head.weight)
    resumed = fit(resumed_model, tr, va, tmp_path / "b", TrainConfig(**cfg))
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for a, b in zip(_strip(full), _strip(resumed), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    for (k, v1), v2 in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(v1.float(), v2.float(), rtol=1e-4, atol=1e-5, msg=k)
    # Already complete: a further call trains nothing.
    assert len(fit(resumed_model, tr, va, tmp_path / "b", TrainConfig(**cfg))) == 3


def test_resume_refuses_other_split(tiny_cache, tmp_path):
    tr, va = _datasets(tiny_cache, aug=False)
    fit(UNet(base_channels=4), tr, va, tmp_path, TrainConfig(epochs=2, stop_after_epoch=1, progress=False),
        meta={"split_sha256": "a" * 64})
    with pytest.raises(ValueError, match="trained on split aaaaaaaaaaaa"):
        fit(UNet(base_channels=4), tr, va, tmp_path, TrainConfig(epochs=2, progress=False), meta={"split_sha256": "b" * 64})


def test_explicit_resume_path_must_exist(tiny_cache, tmp_path):
    tr, va = _datasets(tiny_cache, aug=False)
    with pytest.raises(FileNotFoundError, match="resume checkpoint .*nope.pt does not exist"):
        fit(UNet(base_channels=4), tr, va, tmp_path, TrainConfig(epochs=1, resume=str(tmp_path / "nope.pt")))


def test_other_architecture_lists_mismatched_keys(tmp_path):
    ckpt = tmp_path / "small.pt"
    train.save_checkpoint(ckpt, {"model": UNet(base_channels=4).state_dict()})
    with pytest.raises(ValueError, match=r"99 shape mismatches: bottleneck\.0\.0\.weight: checkpoint \(64, 32, 3, 3\) vs model \(128, 64, 3, 3\)"):
        load_model_state(UNet(base_channels=8), load_checkpoint(ckpt)["model"], str(ckpt))
    other = {"layer.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"missing keys: .*unexpected keys: layer\.weight"):
        load_model_state(UNet(base_channels=4), other)


def test_cuda_checkpoint_loads_on_cpu(tmp_path, monkeypatch):
    """A file whose tensors were saved from cuda:0 (location tag forced) loads onto the CPU."""
    import torch.serialization as ser

    path = tmp_path / "cuda.pt"
    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    torch.save({"model": UNet(base_channels=4).state_dict()}, path)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a bare load does on a CPU-only machine
    state = load_checkpoint(path)["model"]
    assert all(v.device.type == "cpu" for v in state.values())
    load_model_state(UNet(base_channels=4), state)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_unsafe_and_truncated_checkpoints_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Evil()}, evil)
    with pytest.raises(ValueError, match="refused to load it"):
        load_checkpoint(evil)
    good = tmp_path / "good.pt"
    train.save_checkpoint(good, {"model": UNet(base_channels=4).state_dict()})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated or not a torch checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_every_torch_load_is_weights_only():
    pkg = Path(train.__file__).parent
    calls = []
    for f in pkg.glob("*.py"):
        for m in re.finditer(r"torch\.load\((.*?)\)\n", f.read_text(), re.S):
            calls.append((f.name, m.group(1)))
    assert calls, "the package loads checkpoints somewhere"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args}) without weights_only=True"


def test_bad_config():
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(lr=0)
