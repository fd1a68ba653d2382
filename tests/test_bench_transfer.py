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
