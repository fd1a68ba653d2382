"""benchmarks/bench_transfer.py helpers that need no training."""

import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_transfer as B  # noqa: E402


def _case(tmp_path, name, flair, seg):
    paths = {}
    for key, arr in (("flair", flair), ("seg", seg)):
        paths[key] = tmp_path / f"{name}_{key}.nii"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), paths[key])
    return SimpleNamespace(case_id=name, images={"flair": paths["flair"]}, seg=paths["seg"])


def test_flair_overlap_hand_computed(tmp_path):
    """Normal brain 1..100 and 20 edema voxels: at 60.5, 40 of the 100 normal voxels are brighter
    (percentile normalisation is monotone); at 500, none is."""
    seg = np.zeros((10, 12, 2), np.uint8)
    seg[:, :, 0].flat[100:] = 2
    hard = np.zeros(seg.shape, np.float32)
    hard[:, :, 0].flat[:] = np.r_[np.arange(1, 101), np.full(20, 60.5)]
    easy = hard.copy()
    easy[:, :, 0].flat[100:] = 500.0
    out = B.flair_overlap([_case(tmp_path, "hard", hard, seg), _case(tmp_path, "easy", easy, seg)])
    assert out["per_case"] == {"hard": 0.4, "easy": 0.0}
    assert out["mean"] == 0.2 and out["n"] == 2


def test_flair_overlap_needs_edema(tmp_path):
    flair = np.ones((4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="label 2"):
        B.flair_overlap([_case(tmp_path, "none", flair, np.zeros(flair.shape, np.uint8))])


def test_worst_set_is_the_lowest_mean_not_the_average():
    results = {
        "a": {"unet": {"mean": 0.71}},
        "b": {"unet": {"mean": 0.58}},
        "c": {"unet": {"mean": 0.93}},
        "synthetic_test": {"unet": {"mean": 0.1}},  # in-domain sets never count
    }
    w = B.worst_set(results, {"a": [], "b": [], "c": []})
    assert w == {"set": "b", "mean": 0.58, "per_set": {"a": 0.71, "b": 0.58, "c": 0.93}}


def test_real_sets_reads_given_folders_and_refuses_unknown_or_empty(tmp_path, monkeypatch):
    given = tmp_path / "independent"
    cid = "BraTS20_Training_001"
    (given / cid).mkdir(parents=True)
    vol = np.zeros((8, 8, 4), np.int16)
    vol[2:6, 2:6, 1:3] = 100
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        nib.save(
            nib.Nifti1Image(vol if m != "seg" else (vol > 0).astype(np.uint8), np.eye(4)),
            given / cid / f"{cid}_{m}.nii",
        )
    a = SimpleNamespace(sets=[f"indep={given}"], sets_dir=str(tmp_path / "built"), real_cases=12, real_seed=0)
    got = B.real_sets(a)
    assert list(got) == ["indep"] and [c.case_id for c in got["indep"]] == [cid]
    assert "given folder" in B.describe_set("indep", a.sets) and "not BraTS" in B.describe_set("indep", a.sets)
    with pytest.raises(SystemExit, match="unknown construction 'nope'"):
        B.real_sets(SimpleNamespace(**{**vars(a), "sets": ["nope"]}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no BraTS cases"):
        B.real_sets(SimpleNamespace(**{**vars(a), "sets": [f"e={tmp_path / 'empty'}"]}))
    built = []
    monkeypatch.setattr(B.constructions, "build", lambda name, out, n, seed, workers=None: built.append(name) or given)
    got = B.real_sets(SimpleNamespace(**{**vars(a), "sets": ["mni_implant"]}))
    assert built == ["mni_implant"] and "construction benchmarks/realanatomy.py" in B.describe_set("mni_implant", [])


def test_training_fit_pools_dice_over_seen_and_other_tumour_slices(monkeypatch):
    """A 'model' that thresholds its input at 0.5; the image equals the mask on the cached tumour slice (z = 0) and
    shows half the tumour on z = 1, none on z = 2: seen Dice 1, other slices 2 * 8 / (8 + 16 + 16) = 0.4. A cached
    tumour-free slice (z = 3) where the model fires everywhere is left out of the seen Dice."""
    import pandas as pd
    import torch

    s = 8
    wt = np.zeros((s, s, 4), np.uint8)
    wt[2:6, 2:6, :3] = 1  # 16 px per slice on z = 0..2
    image = np.zeros((1, s, s, 4), np.float32)
    image[0, :, :, 3] = 1.0  # false positives everywhere on the tumour-free z = 3
    image[0, :, :, 0] = wt[:, :, 0]
    image[0, 2:6, 2:4, 1] = 1.0  # 8 of the 16 tumour pixels visible on z = 1
    monkeypatch.setattr(B, "load_case", lambda case, modalities: {"image": image, "wt": wt})
    cache = SimpleNamespace(
        images=np.moveaxis(image[..., [0, 3]], -1, 0).astype(np.float16),
        masks=np.moveaxis(wt[..., [0, 3]], -1, 0),
        index=pd.DataFrame({"case_id": ["a", "a"], "z": [0, 3], "tumour_px": [16, 0]}),
        rows_for=lambda ids: np.array([0, 1]) if "a" in ids else np.array([], int),
    )

    def model(x):
        return (x - 0.5) * 20.0

    out = B.training_fit(model, cache, ["a"], {"a": object()}, s, torch.device("cpu"))
    assert out["training_tumour_slices"] == {"dice": 1.0, "slices": 1}
    assert out["other_tumour_slices_of_training_cases"] == {"dice": 0.4, "slices": 2}
