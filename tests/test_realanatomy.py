"""The real-anatomy benchmark set (benchmarks/realanatomy.py): template loading and tumour implanting."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nilearn")  # dev dependency: only the benchmark needs the bundled MNI152 template
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import realanatomy as R  # noqa: E402


@pytest.fixture(scope="module")
def tpl():
    return R.load_template()


def test_template_on_the_brats_grid(tpl):
    import nibabel as nib

    for k in ("t1", "gm", "wm", "csf"):
        assert tpl[k].shape == R.SHAPE and tpl[k].dtype == np.float32
        assert 0.0 <= tpl[k].min() and tpl[k].max() <= 1.0, k
    raw = np.asarray(nib.load(R.template_dir() / R.TEMPLATE_FILES["t1"]).dataobj, np.float32) / 255.0
    # x and y flipped as BraTS files are, padded (197 -> 240: 21 before; 233 -> 240: 3 before), 155 slices
    np.testing.assert_allclose(tpl["t1"][21 + 10, 3 + 50, 70], raw[196 - 10, 232 - 50, 70])
    brain_ml = tpl["brain"].sum() / 1000.0
    assert 1100 < brain_ml < 2000, f"brain volume {brain_ml} mL is not that of an adult brain"
    assert not tpl["brain"][:, :, 0].all() and tpl["brain"][:, :, 77].sum() > 10000


def test_implanted_tumour_labels_and_white_matter_edema(tpl):
    rng = np.random.default_rng(0)
    centre = np.array([150.0, 110.0, 90.0], np.float32)
    assert tpl["wm"][tuple(centre.astype(int))] > 0.5, "test centre should lie in white matter"
    core, edema, infil = R._tumour(rng, tpl["wm"], tpl["csf"], tpl["brain"], centre, 12.0, high_grade=True)
    assert set(np.unique(core)) == {0, 1, 4}
    assert not (edema & (core > 0)).any(), "edema and core are disjoint"
    assert tpl["brain"][edema].all() and tpl["brain"][core > 0].all()
    ring = (core == 4).sum() / (core > 0).sum()
    assert 0.2 < ring < 0.95, f"enhancing rim share {ring:.2f}"
    # edema follows white matter: its mean WM probability exceeds that of the shell it grew into
    near = (infil > 0.01) & tpl["brain"] & (core == 0)
    assert tpl["wm"][edema].mean() > tpl["wm"][near].mean() + 0.05


def test_build_in_parallel_writes_the_same_files(tmp_path, monkeypatch):
    """``workers`` > 1 only spreads cases over processes: same files as one worker, marker last."""
    import nibabel as nib

    def tiny_case(tpl, seed, index):
        rng = np.random.default_rng([seed, 1000 + index])
        seg = np.zeros(R.SHAPE, np.uint8)
        seg[100:110, 100:110, 70 + index : 80 + index] = 2
        vol = {m: rng.uniform(1, 100, R.SHAPE).astype(np.float32) for m in R.MODALITIES}
        return {**vol, "seg": seg, "meta": {"index": index}}

    monkeypatch.setattr(R, "make_case", tiny_case)  # the real cases take ~1 min each on a laptop core
    monkeypatch.setattr(R, "_TEMPLATE", {})  # nothing to load for tiny_case
    one = R.build(tmp_path / "one", cases=3, seed=5, progress=False, workers=1)
    two = R.build(tmp_path / "two", cases=3, seed=5, progress=False, workers=2)
    for cid in ("BraTS20_Training_001", "BraTS20_Training_003"):
        for m in (*R.MODALITIES, "seg"):
            a = np.asarray(nib.load(one / cid / f"{cid}_{m}.nii").dataobj)
            b = np.asarray(nib.load(two / cid / f"{cid}_{m}.nii").dataobj)
            np.testing.assert_array_equal(a, b, err_msg=f"{cid} {m}")
    marker = (two / R.MARKER).read_text()
    assert '"index": 2' in marker and not list(two.glob(".tmp-*"))
