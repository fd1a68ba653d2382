import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from brainseg_utils.data.dataset import SliceDataset
from brainseg_utils.data.transforms import train_augmentation
from brainseg_utils.models.losses import FocalDiceLoss
from brainseg_utils.models.unet import UNet
from brainseg_utils.training import engine as train
from brainseg_utils.training.engine import TrainConfig, fit, validate

TIMING_KEYS = {"epoch_seconds", "train_images_per_s", "val_images_per_s"}


def _datasets(tiny_cache, aug=True):
    cache, split = tiny_cache
    tr = SliceDataset(cache, cache.rows_for(split["train"]), train_augmentation() if aug else None, seed=0)
    va = SliceDataset(cache, cache.rows_for(split["val"]))
    return tr, va


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
    from brainseg_utils.data.brats import discover_cases
    from brainseg_utils.data.slices import SliceConfig, build_cache, write_split_once
    from brainseg_utils.data.synthetic import SyntheticConfig, generate_dataset

    base = tmp_path_factory.mktemp("learn")
    root = generate_dataset(base / "ds", SyntheticConfig(cases=8, seed=3, depth=40), progress=False)
    cases = discover_cases(root)
    cache = build_cache(cases, base / "slices", SliceConfig(img_size=64, tumour_free_fraction=0.3), progress=False)
    split = write_split_once(base / "splits.json", [c.case_id for c in cases], (0.6, 0.2, 0.2), seed=0)
    return cache, split


def test_unet_learns_on_synthetic_data(learn_data, tmp_path):
    """Validation Dice rises well above its start within a CPU-sized budget (~25 s).

    Measured on generator version 4 (base 8, 20 epochs, lr 2e-3, batch 16): tumour-slice Dice 0.00 before
    training, best 0.28 (last 0.24); all-slice Dice 0.217 -> best 0.421 (last 0.359); train loss 1.04 -> 0.59.
    Version 2: best 0.34, all-slice 0.235 -> 0.474; version 1's easier data reached 0.78-0.82. A model that
    learns only the background stays at tumour-slice Dice 0, all-slice 0.217 and loss ~0.85.
    """
    cache, split = learn_data
    tr = SliceDataset(cache, cache.rows_for(split["train"]), train_augmentation(0.5), seed=0)
    va = SliceDataset(cache, cache.rows_for(split["val"]))
    torch.manual_seed(0)
    model = UNet(base_channels=8)
    before = validate(model, torch.utils.data.DataLoader(va, batch_size=16), FocalDiceLoss(), torch.device("cpu"), None)
    hist = fit(model, tr, va, tmp_path, TrainConfig(epochs=20, batch_size=16, lr=2e-3, seed=0, progress=False))
    best = max(h["val_dice_tumour"] for h in hist)
    assert before["dice_tumour"] < 0.1
    assert best > 0.2, [round(h["val_dice_tumour"], 3) for h in hist]
    assert max(h["val_dice"] for h in hist) > before["dice"] + 0.15
    assert hist[-1]["train_loss"] < 0.75 * hist[0]["train_loss"]
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
    fit(
        UNet(base_channels=4),
        tr,
        va,
        tmp_path,
        TrainConfig(epochs=2, stop_after_epoch=1, progress=False),
        meta={"split_sha256": "a" * 64},
    )
    with pytest.raises(ValueError, match="trained on split aaaaaaaaaaaa"):
        fit(
            UNet(base_channels=4),
            tr,
            va,
            tmp_path,
            TrainConfig(epochs=2, progress=False),
            meta={"split_sha256": "b" * 64},
        )


def test_explicit_resume_path_must_exist(tiny_cache, tmp_path):
    tr, va = _datasets(tiny_cache, aug=False)
    with pytest.raises(FileNotFoundError, match="resume checkpoint .*nope.pt does not exist"):
        fit(UNet(base_channels=4), tr, va, tmp_path, TrainConfig(epochs=1, resume=str(tmp_path / "nope.pt")))


def test_bad_config():
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=re.escape("ema_decay (UNET_EMA_DECAY) must be in [0, 1), got 1.0")):
        TrainConfig(ema_decay=1.0)


# ----------------------------------------------------------------------------- resume rules, write order, determinism
def _toy_data(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    y = (x > 0.7).float()
    ds = torch.utils.data.TensorDataset(x, y)
    return ds, ds


def _toy_cfg(**kw):
    base = dict(epochs=2, batch_size=2, lr=1e-2, seed=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_with_more_epochs_follows_the_longer_cosine_curve(tmp_path):
    """Extending 1 -> 3 epochs: from epoch 2 on the LR is that of an uninterrupted 3-epoch run.
    (Before the fix the old T_max = 1 stayed: the LR fell to 0 and climbed again.)"""
    tr, va = _toy_data()
    torch.manual_seed(0)
    fit(UNet(base_channels=4), tr, va, tmp_path / "short", _toy_cfg(epochs=1))
    extended = fit(UNet(base_channels=4), tr, va, tmp_path / "short", _toy_cfg(epochs=3))
    torch.manual_seed(0)
    full = fit(UNet(base_channels=4), tr, va, tmp_path / "full", _toy_cfg(epochs=3))
    assert [h["epoch"] for h in extended] == [1, 2, 3]
    lr0 = 1e-2
    assert extended[0]["lr"] == full[0]["lr"] == lr0
    for a, b in zip(extended[1:], full[1:], strict=True):
        assert abs(a["lr"] - b["lr"]) < 1e-7, (a["epoch"], a["lr"], b["lr"])
    # hand-computed: lr(e) = lr0 (1 + cos(pi e / 3)) / 2 for e = 1, 2: 0.0075, 0.0025
    assert [h["lr"] for h in extended[1:]] == pytest.approx([0.0075, 0.0025], abs=1e-9)
    ckpt = torch.load(tmp_path / "short" / "last.pt", weights_only=True)
    assert ckpt["config"]["train"]["epochs"] == 3 and ckpt["scheduler"]["T_max"] == 3


@pytest.mark.parametrize(
    "change, keys",
    [
        (dict(lr=5e-3), "train.lr: stored 0.01, requested 0.005"),
        (dict(epochs=1), "train.epochs: stored 2, requested 1"),
        (dict(batch_size=4, weight_decay=0.0), "train.batch_size: stored 2, requested 4; train.weight_decay"),
    ],
)
def test_resume_refuses_other_settings(tmp_path, change, keys):
    tr, va = _toy_data()
    fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg(stop_after_epoch=1))
    with pytest.raises(ValueError, match=re.escape(keys) + ".*RESUME='never'.*another output folder"):
        fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg(**change))
    with pytest.raises(ValueError, match=re.escape("model.base_channels: stored 4, requested 8")):
        fit(UNet(base_channels=8), tr, va, tmp_path, _toy_cfg())
    # resume="never" starts fresh with the new settings
    hist = fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg(**change, resume="never"))
    assert len(hist) == change.get("epochs", 2)


def test_same_seed_gives_bitwise_identical_weights(tmp_path):
    tr, va = _toy_data()
    states = []
    for run in ("a", "b"):
        torch.manual_seed(0)
        model = UNet(base_channels=4)
        fit(model, tr, va, tmp_path / run, _toy_cfg(epochs=2))
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert not torch.equal(states[0]["head.weight"], UNet(base_channels=4).state_dict()["head.weight"])


_KILL_SCRIPT = r"""
import os, signal, sys
import torch
from brainseg_utils.training import engine as train
from brainseg_utils.models.unet import UNet

out, kill_at = sys.argv[1], int(sys.argv[2])
dice_by_epoch = {0: 0.1, 1: 0.5, 2: 0.3, 3: 0.2}  # best at epoch 2, never improved on afterwards
state = {"epoch": 0, "renames": 0}
seed_epoch, replace = train._seed_epoch, os.replace

def _seed(seed, epoch):
    state["epoch"] = epoch
    seed_epoch(seed, epoch)

def _validate(*a, **k):
    return {"loss": 1.0, "dice": dice_by_epoch[state["epoch"]], "dice_tumour": 0.0, "images_per_s": 1.0}

def _replace(src, dst):
    # the k-th file write of epoch 2 (index 1): SIGKILL before it is renamed into place
    if state["epoch"] == 1 and os.path.basename(str(dst)) in train.CHECKPOINT_FILES:
        if state["renames"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        state["renames"] += 1
    replace(src, dst)

train._seed_epoch, train.validate, os.replace = _seed, _validate, _replace
g = torch.Generator().manual_seed(0)
x = torch.rand(4, 1, 16, 16, generator=g)
ds = torch.utils.data.TensorDataset(x, (x > 0.7).float())
torch.manual_seed(0)
train.fit(UNet(base_channels=4), ds, ds, out, train.TrainConfig(epochs=4, batch_size=2, lr=1e-2, progress=False))
"""


@pytest.mark.parametrize("kill_at", [1, 2])
def test_kill_between_checkpoint_writes_leaves_a_consistent_run(tmp_path, kill_at):
    """SIGKILL after the first (then the second) of epoch 2's three writes, with its temp file on disk;
    resuming then gives best.pt epoch == history best_epoch == last.pt best_epoch and no temp files."""
    import json
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "kill_fit.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(train.__file__).parents[2])}
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(script), str(out), str(kill_at)], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert list(out.glob(".*.tmp*")), "the kill left a temporary file (what the next start must remove)"
    done = subprocess.run([sys.executable, str(script), str(out), "99"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    history = json.loads((out / "history.json").read_text())
    assert best["epoch"] == history["best_epoch"] == last["best_epoch"] == 2
    assert last["epoch"] == 4 and len(history["history"]) == 4
    assert not list(out.glob(".*")), "no temporary files remain"


# ----------------------------------------------------------------------------- weight averaging (ema_decay)
def _float_state(sd):
    return {k: v for k, v in sd.items() if v.is_floating_point()}


def test_ema_checkpoint_holds_the_moving_average(tmp_path):
    """4 toy items, batch 2: two optimizer steps. The first update copies the weights w1, the second gives
    d * w1 + (1 - d) * w2 with the warm-up decay d = min(0.7, 2 / 11); validation and best.pt / last.pt's
    "model" use it, "train_model" holds w2."""
    decay, d = 0.7, 2 / 11
    tr, va = _toy_data()
    torch.manual_seed(0)
    model = UNet(base_channels=4)
    seen = []

    def snapshot(mod, _inputs):  # the forward of step k sees the weights after step k - 1
        if mod is model and mod.training:
            seen.append({k: v.detach().clone() for k, v in _float_state(mod.state_dict()).items()})

    model.register_forward_pre_hook(snapshot)
    hist = fit(model, tr, va, tmp_path, _toy_cfg(epochs=1, ema_decay=decay))
    assert len(seen) == 2
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert last["ema_updates"] == 2 and last["config"]["train"]["ema_decay"] == decay
    w1, w2 = seen[1], _float_state(last["train_model"])
    for k, v in _float_state(last["model"]).items():
        torch.testing.assert_close(v, d * w1[k] + (1 - d) * w2[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(best["model"][k], v, rtol=0, atol=0, msg=k)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # the two steps did change the weights
    # the history's validation is that of the averaged weights
    ema_model = UNet(base_channels=4)
    ema_model.load_state_dict(last["model"])
    val = validate(ema_model, torch.utils.data.DataLoader(va, batch_size=2), FocalDiceLoss(), torch.device("cpu"), None)
    assert hist[0]["val_loss"] == pytest.approx(val["loss"], rel=1e-5)


def test_ema_warmup_decay_follows_the_update_count():
    """min(decay, (1 + n) / (10 + n)): the average follows the weights early and reaches ``decay`` later."""
    from brainseg_utils.training.ema import warmup_decay

    assert warmup_decay(0.98, 0) == pytest.approx(0.1)
    assert warmup_decay(0.98, 50) == pytest.approx(51 / 60)
    assert warmup_decay(0.98, 440) == pytest.approx(0.98)  # 441 / 450
    assert warmup_decay(0.98, 10_000) == 0.98 and warmup_decay(0.5, 100) == 0.5


def test_ema_resume_matches_uninterrupted_run(tmp_path):
    tr, va = _toy_data()
    cfg = dict(epochs=3, ema_decay=0.9)
    torch.manual_seed(0)
    full = fit(UNet(base_channels=4), tr, va, tmp_path / "a", _toy_cfg(**cfg))
    torch.manual_seed(0)
    fit(UNet(base_channels=4), tr, va, tmp_path / "b", _toy_cfg(**cfg, stop_after_epoch=1))
    torch.manual_seed(5)  # another init: everything must come from last.pt
    resumed = fit(UNet(base_channels=4), tr, va, tmp_path / "b", _toy_cfg(**cfg))
    assert [h["val_loss"] for h in _strip(resumed)] == pytest.approx([h["val_loss"] for h in _strip(full)], rel=1e-5)
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in ("a", "b"))
    assert a["ema_updates"] == b["ema_updates"] == 6
    for part in ("model", "train_model"):
        for k, v in _float_state(a[part]).items():
            torch.testing.assert_close(b[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")


def test_ema_off_keeps_old_checkpoints_resumable_and_changing_it_is_refused(tmp_path):
    tr, va = _toy_data()
    fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg(stop_after_epoch=1))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert "ema_decay" not in ckpt["config"]["train"] and "train_model" not in ckpt  # as before the option
    with pytest.raises(ValueError, match=re.escape("train.ema_decay: stored '<absent>', requested 0.9")):
        fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg(ema_decay=0.9))
    assert len(fit(UNet(base_channels=4), tr, va, tmp_path, _toy_cfg())) == 2


def test_constant_lr_schedule_keeps_the_lr_and_resumes(tmp_path):
    """lr_schedule="constant" (the seed profile's): every epoch at lr; an extended run resumes with it. The cosine
    default is not stored, so checkpoints written before the option resume; switching schedules is refused."""
    tr, va = _toy_data()
    fit(UNet(base_channels=4), tr, va, tmp_path / "c", _toy_cfg(epochs=1, lr_schedule="constant"))
    hist = fit(UNet(base_channels=4), tr, va, tmp_path / "c", _toy_cfg(epochs=3, lr_schedule="constant"))
    assert [h["lr"] for h in hist] == [1e-2, 1e-2, 1e-2]
    assert torch.load(tmp_path / "c" / "last.pt", weights_only=True)["config"]["train"]["lr_schedule"] == "constant"
    fit(UNet(base_channels=4), tr, va, tmp_path / "d", _toy_cfg(stop_after_epoch=1))
    assert "lr_schedule" not in torch.load(tmp_path / "d" / "last.pt", weights_only=True)["config"]["train"]
    with pytest.raises(ValueError, match=re.escape("train.lr_schedule: stored '<absent>', requested 'constant'")):
        fit(UNet(base_channels=4), tr, va, tmp_path / "d", _toy_cfg(lr_schedule="constant"))
