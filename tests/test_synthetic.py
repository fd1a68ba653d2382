import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brainseg_utils import synthetic
from brainseg_utils.synthetic import MODALITIES, SyntheticConfig, generate_case, generate_dataset

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
    assert list(rows[0]) == ["Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID", "TCGA_TCIA_subject_ID",
                             "BraTS_2019_subject_ID", "BraTS_2020_subject_ID"]
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


def _high_grade_case(depth: int = 64) -> dict:
    """The first case of seed 1 with an enhancing rim (grade is random, 75% high grade)."""
    for i in range(8):
        d = generate_case(SyntheticConfig(cases=8, seed=1, depth=depth), i)
        if d["meta"]["grade"] == "HGG":
            return d
    raise AssertionError("no high-grade case among the first 8 of seed 1")


def test_contrasts_point_the_right_way():
    """Edema bright on FLAIR and T2, rim bright on T1ce, CSF dark on FLAIR and bright on T2."""
    d = _high_grade_case()
    seg = d["seg"]
    brain = d["flair"] > 0
    normal = brain & (seg == 0)
    for m in ("flair", "t2"):
        assert d[m][seg == 2].mean() > 1.3 * d[m][normal].mean(), m
    assert (seg == 4).any()
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
    assert set(names) == {"BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003", "BraTS20_Training_355"}
    assert all(n.endswith(".nii.gz") for n in names["BraTS20_Training_001"])
    assert "W39_1998.09.19_Segm.nii" in names["BraTS20_Training_355"]
    assert "BraTS20_Training_355_seg.nii" not in names["BraTS20_Training_355"]
    assert nib.load(quirky_root / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii").get_data_dtype() == np.float32


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


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        generate_dataset(tmp_path, SyntheticConfig(cases=1, depth=16), workers=1, progress=False)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"cases": 0}, "cases must be >= 1"),
    ({"depth": 8}, "depth must be in"),
    ({"quirks": ("nope",)}, "unknown quirk"),
    ({"cases": 2, "quirks": ("gz",)}, "needs >= 3 cases"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


def test_cli_gz(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "o"), "--cases", "1", "--depth", "16", "--gz", "--workers", "1"]) == 0
    files = sorted(p.name for p in (tmp_path / "o" / "BraTS20_Training_001").iterdir())
    assert files == sorted(f"BraTS20_Training_001_{m}.nii.gz" for m in (*MODALITIES, "seg"))
    assert "1 cases" in capsys.readouterr().out


# ----------------------------------------------------------------------------- realism (issue 14)
def test_tissue_means_are_drawn_per_case_within_ranges_and_keep_contrast_direction():
    """SynthSeg-style: each draw differs, stays inside CONTRAST_RANGE and keeps every ordering."""
    for m in MODALITIES:
        draws = np.stack([synthetic.draw_contrast(np.random.default_rng([7, k]), m) for k in range(200)])
        lo, hi = (np.array(v) for v in zip(*synthetic.CONTRAST_RANGE[m], strict=True))
        assert (draws >= lo - 1e-6).all() and (draws <= hi + 1e-6).all(), m
        for a, b, gap in synthetic.CONTRAST_ORDER[m]:
            assert (draws[:, a] >= draws[:, b] + gap - 1e-6).all(), (m, a, b)
        assert draws[:, synthetic.WM].std() > 0.02, f"{m}: white-matter mean barely varies across cases"
    fl = synthetic.CONTRAST_ORDER["flair"]
    assert (synthetic.ED, synthetic.GM, 0.2) in fl and (synthetic.GM, synthetic.WM, 0.04) in fl


def test_intensity_ratios_differ_across_cases():
    """Not one fixed look: the grey/white FLAIR contrast changes from case to case."""
    ratios = []
    for i in range(2):
        d = generate_case(SyntheticConfig(cases=2, seed=4, depth=24), i)
        f = d["flair"][d["flair"] > 0]
        ratios.append(np.percentile(f, 90) / np.percentile(f, 50))
    assert abs(ratios[0] - ratios[1]) > 0.01, ratios


def test_tumour_labels_nested_as_in_brats():
    """Necrosis (1) sits inside the enhancing rim (4), the core inside edema (2): the core's outer
    boundary touches edema rather than normal brain, and necrosis in a high-grade case touches
    mostly the rim."""
    d = _high_grade_case()
    seg = d["seg"]
    core = (seg == 1) | (seg == 4)
    shell = ndimage.binary_dilation(core) & ~core
    assert (seg[shell] == 2).mean() > 0.7, "the tumour core is wrapped in edema"
    ncr = seg == 1
    ncr_shell = ndimage.binary_dilation(ncr) & ~ncr
    assert (seg[ncr_shell] == 4).mean() > 0.6, "necrosis is enclosed by the enhancing rim"


def test_flair_hyperintensities_outside_tumours():
    """Some cases carry FLAIR-bright non-tumour lesions (label 0) so bright is not always tumour."""
    found = False
    for i in range(6):
        d = generate_case(SyntheticConfig(cases=6, seed=2, depth=64), i)
        les = d["meta"]["lesions"]
        if not (les["caps"] or les["spots"]):
            continue
        seg, fl = d["seg"], d["flair"]
        normal = (fl > 0) & (seg == 0)
        bright_normal = normal & (fl > np.percentile(fl[seg == 2], 25))
        assert bright_normal.sum() > 20, f"case {i}: lesions {les} but no bright non-tumour voxels"
        found = True
        break
    assert found, "no case among 6 had non-tumour lesions"
