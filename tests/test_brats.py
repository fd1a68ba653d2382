import logging
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from brainseg_utils.data import brats, validate
from brainseg_utils.data.brats import CaseValidationError, discover_cases
from brainseg_utils.data.validate import validate_case
from brainseg_utils.data.volumes import load_case, normalise_volume

CID = "BraTS20_Training_001"


def _path(root, name, cid=CID):
    return root / cid / f"{cid}_{name}.nii"


def _rewrite(path, data=None, affine=None, dtype=None):
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy() if data is None else data  # not a memmap of the file we overwrite
    out = nib.Nifti1Image(data, img.affine if affine is None else affine)
    out.set_data_dtype(dtype or data.dtype)
    nib.save(out, path)


def _case(root, cid=CID):
    return next(c for c in discover_cases(root) if c.case_id == cid)


# ----------------------------------------------------------------------------- discovery
def test_discover_flat(synth_root):
    cases = discover_cases(synth_root)
    assert [c.case_id for c in cases] == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    c = cases[0]
    assert c.images["flair"] == _path(synth_root, "flair") and c.seg == _path(synth_root, "seg") and c.labelled


def test_discover_kaggle_layout_with_validation_set(synth_root, tmp_path):
    top = tmp_path / "brats20-dataset-training-validation"
    train = top / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    val = top / "BraTS2020_ValidationData" / "MICCAI_BraTS2020_ValidationData"
    shutil.copytree(synth_root, train)
    vcase = val / "BraTS20_Validation_001"
    vcase.mkdir(parents=True)
    for m in brats.MODALITIES:
        shutil.copy(_path(synth_root, m), vcase / f"BraTS20_Validation_001_{m}.nii")
    cases = discover_cases(top)
    assert len(cases) == 6
    v = next(c for c in cases if c.case_id == "BraTS20_Validation_001")
    assert v.subset == "Validation" and v.seg is None and not v.labelled
    assert validate_case(v).labels == []  # images are still checked
    assert [c.case_id for c in brats.labelled_cases(cases)] == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    assert brats.find_brats_root(train) == train


def test_alias_355_found_without_renaming(quirky_root):
    case = _case(quirky_root, "BraTS20_Training_355")
    assert case.seg.name == "W39_1998.09.19_Segm.nii"
    assert validate_case(case).labels[0] == 0
    assert not (quirky_root / "BraTS20_Training_355" / "BraTS20_Training_355_seg.nii").exists()


def test_gz_and_float32_cases_load(quirky_root):
    gz = _case(quirky_root, "BraTS20_Training_001")
    assert gz.images["t2"].name.endswith(".nii.gz")
    f32 = validate_case(_case(quirky_root, "BraTS20_Training_002"))
    assert f32.dtypes["flair"] == "float32"
    vol = load_case(gz, ("flair", "t2"))
    assert vol["image"].shape == (2, 240, 240, 32) and vol["image"].dtype == np.float32


def test_nii_preferred_when_both_exist(synth_copy, caplog):
    shutil.copy(_path(synth_copy, "flair"), synth_copy / CID / f"{CID}_flair.nii.gz")
    with caplog.at_level(logging.WARNING):
        case = _case(synth_copy)
    assert case.images["flair"].name == f"{CID}_flair.nii"
    assert "both" in caplog.text


def test_find_root_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        brats.find_brats_root(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no BraTS20"):
        brats.find_brats_root(tmp_path)
    monkeypatch.setattr(brats, "KNOWN_ROOTS", ())
    assert brats.find_brats_root(None) is None


def test_cli_find(synth_root, tmp_path, capsys):
    assert brats.main(["--find", "--root", str(synth_root)]) == 0
    assert capsys.readouterr().out.strip() == str(synth_root)
    assert brats.main(["--find", "--root", str(tmp_path / "missing")]) == 2


# ----------------------------------------------------------------------------- validation errors
def test_valid_case_report(synth_root):
    rep = validate_case(_case(synth_root))
    seg = np.asarray(nib.load(_path(synth_root, "seg")).dataobj)
    flair = np.asarray(nib.load(_path(synth_root, "flair")).dataobj)
    assert rep.shape == (240, 240, 32)
    assert rep.tumour_voxels == int((seg > 0).sum()) and rep.brain_voxels == int((flair != 0).sum())
    assert set(rep.labels) <= {0, 1, 2, 4}


def test_missing_file(synth_copy):
    _path(synth_copy, "t1ce").unlink()
    with pytest.raises(
        CaseValidationError, match=r"expected files BraTS20_Training_001_t1ce\.nii\[\.gz\], found no such file"
    ):
        validate_case(_case(synth_copy))


def test_missing_seg_in_training_case(synth_copy):
    _path(synth_copy, "seg").unlink()
    case = _case(synth_copy)
    assert case.seg is None and not case.labelled
    with pytest.raises(CaseValidationError, match="_seg"):
        validate_case(case)


def test_shape_mismatch(synth_copy):
    p = _path(synth_copy, "t2")
    _rewrite(p, np.zeros((240, 240, 31), np.int16) + 5)
    with pytest.raises(
        CaseValidationError,
        match=r"t2\.nii\): expected shape \(240, 240, 32\) \(as flair\), found shape \(240, 240, 31\)",
    ):
        validate_case(_case(synth_copy))


def test_affine_mismatch(synth_copy):
    p = _path(synth_copy, "seg")
    aff = nib.load(p).affine.copy()
    aff[0, 3] += 2.0
    _rewrite(p, affine=aff)
    with pytest.raises(CaseValidationError, match="expected the affine of flair") as ei:
        validate_case(_case(synth_copy))
    assert ei.value.path.endswith("_seg.nii")


def test_unexpected_label(synth_copy):
    p = _path(synth_copy, "seg")
    seg = np.asarray(nib.load(p).dataobj).copy()
    seg[seg == 4] = 3
    seg[0, 0, 0] = 3
    _rewrite(p, seg)
    with pytest.raises(
        CaseValidationError,
        match=r"expected labels within \[0, 1, 2, 4\], found labels \[0, 1, 2, 3\]|found labels \[0, 2, 3\]",
    ):
        validate_case(_case(synth_copy))


def test_non_finite_intensities(synth_copy):
    p = _path(synth_copy, "t1")
    data = np.asarray(nib.load(p).dataobj).astype(np.float32)
    data[100, 100, 10] = np.nan
    data[101, 100, 10] = np.inf
    _rewrite(p, data)
    with pytest.raises(CaseValidationError, match=r"t1\.nii\): expected finite intensities, found 2 NaN/inf voxels"):
        validate_case(_case(synth_copy))


def test_empty_brain(synth_copy):
    _rewrite(_path(synth_copy, "flair"), np.zeros((240, 240, 32), np.int16))
    with pytest.raises(CaseValidationError, match="expected a non-empty brain"):
        validate_case(_case(synth_copy))


def test_unreadable_file(synth_copy):
    _path(synth_copy, "t1").write_bytes(b"not a nifti file at all")
    with pytest.raises(CaseValidationError, match="expected a readable NIfTI-1 file"):
        validate_case(_case(synth_copy))


def test_truncated_nii_names_file_and_bytes(synth_copy):
    path = _path(synth_copy, "t2")
    full = path.read_bytes()
    path.write_bytes(full[:200_000])  # header intact, voxel data cut
    need = 240 * 240 * 32 * 2  # int16
    msg = (
        rf"BraTS20_Training_001 \({path}\): expected {need:,} bytes of voxel data \(240x240x32 x int16\), "
        rf"found {200_000 - 352:,} bytes \(the file is truncated\)"
    )
    with pytest.raises(CaseValidationError, match=msg):
        validate_case(_case(synth_copy))
    with pytest.raises(CaseValidationError, match=msg):
        load_case(_case(synth_copy), ("flair", "t2"))


def test_truncated_nii_gz_names_file_and_bytes(synth_copy):
    """A cut .nii.gz used to escape as a bare EOFError (no file name) and stop the whole audit."""
    import gzip

    src = _path(synth_copy, "flair")
    gz = src.with_name(src.name + ".gz")
    blob = gzip.compress(src.read_bytes())
    gz.write_bytes(blob[: len(blob) // 2])
    src.unlink()
    with pytest.raises(
        CaseValidationError,
        match=rf"\({re.escape(str(gz))}\): expected {240 * 240 * 32 * 2:,} bytes "
        r"of voxel data .*, found [\d,]+ bytes before the compressed stream "
        r"ends or breaks \(truncated or damaged: EOFError",
    ):
        load_case(_case(synth_copy))
    cases = discover_cases(synth_copy)
    good, _, skipped = validate.audit_cases(cases, skip_bad=True, progress=False)
    assert len(good) == 4 and [s["case_id"] for s in skipped] == [CID] and skipped[0]["path"] == str(gz)
    with pytest.raises(CaseValidationError, match="truncated or damaged"):
        validate.audit_cases(cases, skip_bad=False, progress=False)


def test_not_3d(synth_copy):
    _rewrite(_path(synth_copy, "flair"), np.ones((240, 240), np.int16))
    with pytest.raises(CaseValidationError, match="expected a 3-D volume"):
        validate_case(_case(synth_copy))


def test_audit_stops_or_skips(synth_copy, caplog):
    _path(synth_copy, "t1", "BraTS20_Training_002").unlink()
    cases = discover_cases(synth_copy)
    with pytest.raises(CaseValidationError, match="BraTS20_Training_002"):
        validate.audit_cases(cases, skip_bad=False, progress=False)
    with caplog.at_level(logging.WARNING):
        good, reports, skipped = validate.audit_cases(cases, skip_bad=True, progress=False)
    assert [c.case_id for c in good] == [c.case_id for c in cases if c.case_id != "BraTS20_Training_002"]
    assert [s["case_id"] for s in skipped] == ["BraTS20_Training_002"] and "t1" in skipped[0]["reason"]
    assert "skipped 1 of 5 cases" in caplog.text
    frame = validate.audit_frame(reports, skipped)
    assert list(frame["status"]) == ["ok", "skipped", "ok", "ok", "ok"]


# ----------------------------------------------------------------------------- loading
def test_normalise_by_hand():
    vol = np.zeros((3, 3, 3), np.float32)
    vol[0, 0, 0], vol[1, 1, 1], vol[2, 2, 2] = 10.0, 20.0, 30.0
    # percentiles 0 and 100 over brain voxels {10, 20, 30}: min-max to [0, 1]; background stays 0
    out = normalise_volume(vol, 0.0, 100.0)
    assert out[0, 0, 0] == 0.0 and out[1, 1, 1] == pytest.approx(0.5) and out[2, 2, 2] == 1.0
    assert out.sum() == pytest.approx(1.5)
    # 50th-100th percentile: 10 and 20 clip to 0, 30 -> 1
    out = normalise_volume(vol, 50.0, 100.0)
    assert (out[0, 0, 0], out[1, 1, 1], out[2, 2, 2]) == (0.0, 0.0, 1.0)
    assert normalise_volume(np.zeros((2, 2, 2))).max() == 0.0


def test_load_case_values(synth_root):
    vol = load_case(_case(synth_root), ("flair",))
    seg = np.asarray(nib.load(_path(synth_root, "seg")).dataobj)
    flair = np.asarray(nib.load(_path(synth_root, "flair")).dataobj)
    np.testing.assert_array_equal(vol["wt"], (seg > 0).astype(np.uint8))
    np.testing.assert_array_equal(vol["brain"], flair != 0)
    img = vol["image"][0]
    assert img.min() == 0.0 and img.max() == 1.0 and (img[flair == 0] == 0).all()
    np.testing.assert_allclose(img, normalise_volume(flair), atol=0)
    with pytest.raises(ValueError, match="subset of"):
        load_case(_case(synth_root), ("dwi",))
