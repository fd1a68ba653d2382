import csv
import json

import nibabel as nib
import numpy as np
import pytest

from brainseg_utils.data import phantom, synthetic
from brainseg_utils.data.synthetic import MODALITIES, SyntheticConfig, generate_case, generate_dataset

TINY_DEPTH = 32  # depth of the conftest datasets


def _load(root, cid, name):
    return nib.load(root / cid / f"{cid}_{name}.nii")


def test_layout_names_shapes_and_dtypes(synth_root):
    cids = sorted(p.name for p in synth_root.iterdir() if p.is_dir())
    assert cids == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    for cid in cids:
        files = sorted(p.name for p in (synth_root / cid).iterdir())
        assert files == sorted(f"{cid}_{m}.nii" for m in (*MODALITIES, "seg"))
        for m in MODALITIES:
            img = _load(synth_root, cid, m)
            assert img.shape == (240, 240, TINY_DEPTH)
            assert img.get_data_dtype() == np.int16
            assert img.header.get_zooms() == (1.0, 1.0, 1.0)
            np.testing.assert_array_equal(img.affine, synthetic.BRATS_AFFINE)
        seg = np.asarray(_load(synth_root, cid, "seg").dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
        assert (seg == 2).any(), "every case has edema"


def test_name_mapping_and_marker(synth_root):
    rows = list(csv.DictReader(open(synth_root / "name_mapping.csv")))
    assert list(rows[0]) == [
        "Grade",
        "BraTS_2017_subject_ID",
        "BraTS_2018_subject_ID",
        "TCGA_TCIA_subject_ID",
        "BraTS_2019_subject_ID",
        "BraTS_2020_subject_ID",
    ]
    assert [r["BraTS_2020_subject_ID"] for r in rows] == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    for r in rows:  # grade follows from the labels: HGG iff an enhancing rim exists
        seg = np.asarray(_load(synth_root, r["BraTS_2020_subject_ID"], "seg").dataobj)
        assert r["Grade"] == ("HGG" if (seg == 4).any() else "LGG")
    marker = json.loads((synth_root / synthetic.MARKER).read_text())
    assert marker["dataset"] == "synthetic" and marker["config"]["cases"] == 5
    assert synthetic.is_synthetic(synth_root) and synthetic.is_synthetic(synth_root / "BraTS20_Training_001")


def test_deterministic_for_a_seed():
    cfg = SyntheticConfig(cases=2, seed=11, depth=24)
    a, b = generate_case(cfg, 1), generate_case(cfg, 1)
    for k in (*MODALITIES, "seg"):
        np.testing.assert_array_equal(a[k], b[k])
    c = generate_case(SyntheticConfig(cases=2, seed=12, depth=24), 1)
    assert not np.array_equal(a["flair"], c["flair"])


def test_contrasts_point_the_right_way():
    """Edema bright on FLAIR and T2, rim bright on T1ce, CSF dark on FLAIR and bright on T2."""
    cfg = SyntheticConfig(cases=1, seed=1, depth=64)
    d = generate_case(cfg, 0)
    seg = d["seg"]
    brain = d["flair"] > 0
    normal = brain & (seg == 0)
    from scipy import ndimage

    tumour = seg > 0
    ring = normal & ndimage.binary_dilation(tumour, iterations=6) & ~ndimage.binary_dilation(tumour, iterations=2)
    for m, ratio in (("flair", 1.2), ("t2", 1.05)):
        # against the normal brain around it (the bias field changes brightness across the brain); medians, since
        # sulcal CSF is bright on T2; edema fades towards its margin, so brighter, not a fixed published ratio
        assert np.median(d[m][seg == 2]) > ratio * np.median(d[m][ring]), m
    assert (seg == 4).any(), "seed 1 case 0 is high grade (has an enhancing rim)"
    rim_t1ce = d["t1ce"][seg == 4].mean() / d["t1ce"][normal].mean()
    rim_t1 = d["t1"][seg == 4].mean() / d["t1"][normal].mean()
    assert rim_t1ce > 1.3 and rim_t1ce > 1.5 * rim_t1
    # darkest decile of normal brain on FLAIR is CSF: it is among the brightest on T2
    dark = normal & (d["flair"] < np.percentile(d["flair"][normal], 5))
    assert d["t2"][dark].mean() > np.percentile(d["t2"][normal], 75)


def test_tumour_free_slices_above_and_below():
    d = generate_case(SyntheticConfig(cases=1, seed=1, depth=155), 0)
    tumour_z = np.flatnonzero(d["seg"].any((0, 1)))
    brain_z = np.flatnonzero(d["flair"].any((0, 1)))
    assert brain_z.min() < tumour_z.min() and tumour_z.max() < brain_z.max()
    assert d["flair"][:, :, 0].max() == 0, "no brain in the very first slice"


def test_quirks_are_planted(quirky_root):
    names = {p.name: sorted(q.name for q in p.iterdir()) for p in quirky_root.iterdir() if p.is_dir()}
    assert set(names) == {
        "BraTS20_Training_001",
        "BraTS20_Training_002",
        "BraTS20_Training_003",
        "BraTS20_Training_355",
    }
    assert all(n.endswith(".nii.gz") for n in names["BraTS20_Training_001"])
    assert "W39_1998.09.19_Segm.nii" in names["BraTS20_Training_355"]
    assert "BraTS20_Training_355_seg.nii" not in names["BraTS20_Training_355"]
    assert (
        nib.load(quirky_root / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii").get_data_dtype() == np.float32
    )


def test_reuse_and_regenerate(tmp_path):
    cfg = SyntheticConfig(cases=1, seed=0, depth=16)
    out = generate_dataset(tmp_path / "d", cfg, workers=1, progress=False)
    f = out / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii"
    mtime = f.stat().st_mtime_ns
    generate_dataset(out, cfg, workers=1, progress=False)
    assert f.stat().st_mtime_ns == mtime, "same config: files are reused"
    generate_dataset(out, SyntheticConfig(cases=1, seed=1, depth=16), workers=1, progress=False)
    assert json.loads((out / synthetic.MARKER).read_text())["config"]["seed"] == 1
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())


def test_dataset_written_by_an_earlier_generator_is_regenerated(tmp_path):
    """Same config, other generator version (or none recorded: version 1, before the marker said): the volumes
    would differ, so the folder is regenerated rather than reused."""
    cfg = SyntheticConfig(cases=1, seed=0, depth=16)
    out = generate_dataset(tmp_path / "d", cfg, workers=1, progress=False)
    f = out / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii"
    marker = json.loads((out / synthetic.MARKER).read_text())
    assert marker["generator_version"] == synthetic.GENERATOR_VERSION
    mtime = f.stat().st_mtime_ns
    generate_dataset(out, cfg, workers=1, progress=False)
    assert f.stat().st_mtime_ns == mtime, "same config and generator: reused"
    del marker["generator_version"]  # as version 1 wrote it
    (out / synthetic.MARKER).write_text(json.dumps(marker))
    generate_dataset(out, cfg, workers=1, progress=False)
    assert f.stat().st_mtime_ns != mtime, "written by another generator: regenerated"
    assert json.loads((out / synthetic.MARKER).read_text())["generator_version"] == synthetic.GENERATOR_VERSION


def test_an_interrupted_regeneration_is_resumed_not_refused(tmp_path, monkeypatch):
    """Regenerating for another config, killed after some cases: the folder holds cases and the previous
    name_mapping.csv but no marker; the next run must regenerate it, not refuse it as foreign (seen here: a killed
    `plan_seed_fits.py` left data/synthetic so, and `bash run_all.sh` then stopped)."""
    out = generate_dataset(tmp_path / "d", SyntheticConfig(cases=2, depth=16), workers=1, progress=False)

    def killed(cfg, i, folder):
        if i == 1:
            raise KeyboardInterrupt("killed")
        return real(cfg, i, folder)

    real = synthetic._write_case
    monkeypatch.setattr(synthetic, "_write_case", killed)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, SyntheticConfig(cases=2, depth=16, seed=1), workers=1, progress=False)
    assert not (out / synthetic.MARKER).exists()
    monkeypatch.setattr(synthetic, "_write_case", real)
    generate_dataset(out, SyntheticConfig(cases=2, depth=16, seed=1), workers=1, progress=False)
    assert json.loads((out / synthetic.MARKER).read_text())["config"]["seed"] == 1
    assert (out / synthetic.MAPPING).read_text().count("BraTS20_Training_") == 2


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        generate_dataset(tmp_path, SyntheticConfig(cases=1, depth=16), workers=1, progress=False)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cases": 0}, "cases must be >= 1"),
        ({"depth": 8}, "depth must be in"),
        ({"quirks": ("nope",)}, "unknown quirk"),
        ({"cases": 2, "quirks": ("gz",)}, "needs >= 3 cases"),
        ({"appearance": "random"}, "appearance must be one of"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


def test_cli_gz(tmp_path, capsys):
    assert (
        synthetic.main(["--out", str(tmp_path / "o"), "--cases", "1", "--depth", "16", "--gz", "--workers", "1"]) == 0
    )
    files = sorted(p.name for p in (tmp_path / "o" / "BraTS20_Training_001").iterdir())
    assert files == sorted(f"BraTS20_Training_001_{m}.nii.gz" for m in (*MODALITIES, "seg"))
    assert "1 cases" in capsys.readouterr().out


def test_lobulated_distance_never_labels_far_voxels():
    # noise below -1 / amplitude used to make the radius factor zero or negative: a voxel 50 voxels from
    # the centre of a radius-10 ball then counted as inside (ratio < 1) or divided by zero
    dist = np.array([0.0, 5.0, 50.0, 50.0, 50.0], np.float32)
    noise = np.array([0.0, 0.0, -1 / 0.35, -4.0, 1.0], np.float32)
    with np.errstate(all="raise"):
        ratio = phantom.lobulated_distance(dist, 10.0, noise, 0.35)
    np.testing.assert_allclose(ratio, [0.0, 0.5, 20.0, 20.0, 50 / 13.5], rtol=1e-6)
    assert (ratio[2:] > 1).all()


def test_contrast_draws_stay_in_their_ranges_and_wide_ranges_reach_further():
    """Per-case FLAIR draws (relative to white matter = 1) lie inside FLAIR_RANGES; the lookup table is
    exactly those draws times white matter; appearance="randomised" (wide) reaches beyond the clinical ranges."""
    S = phantom
    seen = {k: [] for k in S.FLAIR_RANGES}
    wide_gm = []
    for seed in range(200):
        look = S.draw_contrast(np.random.default_rng(seed), high_grade=seed % 2 == 0)
        f = look["flair"]
        for k, (lo, hi) in S.FLAIR_RANGES.items():
            assert lo - 1e-3 <= f[k] <= hi + 1e-3, (k, f[k])
            seen[k].append(f[k])
        lut = look["lut"]["flair"] / look["lut"]["flair"][S.TISSUE["WM"]]
        core = f["necrosis"] if seed % 2 == 0 else f["low_grade_core"]
        np.testing.assert_allclose(lut, [0, f["csf"], f["gm"], 1, f["edema"], core, f["rim"], f["pvh"]], atol=2e-3)
        for m in ("t1", "t1ce", "t2"):
            rel = look["lut"][m][1:] / np.asarray(S.CONTRAST[m][1:], np.float32)
            assert ((rel > 0.9 - 1e-6) & (rel < 1.1 + 1e-6)).all(), m
        assert 0.15 <= look["bias"] <= 0.45
        wide_gm.append(S.draw_contrast(np.random.default_rng(seed), True, wide=True)["flair"]["gm"])
    for k, (lo, hi) in S.FLAIR_RANGES.items():  # the draws spread over the range, not one value
        assert np.ptp(seen[k]) > 0.6 * (hi - lo), k
    assert max(wide_gm) > S.FLAIR_RANGES["gm"][1] and min(wide_gm) < S.FLAIR_RANGES["gm"][0]


def test_appearance_changes_intensities_not_anatomy_or_tumours():
    fixed = generate_case(SyntheticConfig(cases=2, seed=4, depth=24), 1)
    rand = generate_case(SyntheticConfig(cases=2, seed=4, depth=24, appearance="randomised"), 1)
    other = generate_case(SyntheticConfig(cases=2, seed=5, depth=24, appearance="randomised"), 1)
    np.testing.assert_array_equal(fixed["seg"], rand["seg"])  # same anatomy and tumours: separate random stream
    assert fixed["meta"]["tumours"] == rand["meta"]["tumours"]
    assert not np.array_equal(fixed["seg"], other["seg"])

    def grey_over_edema(case):  # FLAIR brightness of normal brain (top decile) relative to the median edema voxel
        f, seg = case["flair"], case["seg"]
        return np.percentile(f[(seg == 0) & (f > 0)], 90) / np.median(f[seg == 2])

    assert abs(grey_over_edema(fixed) - grey_over_edema(rand)) > 0.01
