"""The demo's test-split examples with ground truth and Dice (app/examples.py), the whole-volume segmentation
(app/volume.py) and the warm-up (Predictor.warm_up)."""

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from uploads import nifti

from brainseg_utils.app import callbacks as C
from brainseg_utils.app import demo as D
from brainseg_utils.app import request as R
from brainseg_utils.app import volume as VOL
from brainseg_utils.app.examples import Truths, examples_table, write_examples
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.upload import UploadError
from brainseg_utils.data.brats import discover_cases
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet


class Stub:
    """A predictor whose masks are known: the U-Net finds nothing, SAM fills the box it gets."""

    dataset, warmup = "synthetic", None

    def __call__(self, sl, box=None, prompt="box"):
        sam = np.zeros(sl.shape, bool)
        x0, y0, x1, y1 = (int(v) for v in box)
        sam[y0 : y1 + 1, x0 : x1 + 1] = True
        return {"unet": np.zeros(sl.shape, bool), "unet_ms": 1.0, "sam": sam, "sam_ms": 2.0, "box": box, "sam_note": ""}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lite = build_backend("litemedsam")
    return Predictor(UNet(base_channels=4), 64, SamDecoderModel(lite, "box", 64).eval(), None, lite, "cpu")


# ----------------------------------------------------------------------------- ground truth and Dice
def test_dice_and_contour_of_an_example_by_hand(tmp_path):
    img = np.zeros((40, 60), np.uint8)
    img[5:35, 5:55] = 120
    png, truth = tmp_path / "ex.png", tmp_path / "ex_truth.png"
    Image.fromarray(img).save(png)
    gt = np.zeros((40, 60), np.uint8)
    gt[10:20, 10:20] = 255  # 100 px
    Image.fromarray(gt).save(truth)
    truths = Truths([[str(png), None, str(truth)]])
    copy = shutil.copy(png, tmp_path / "renamed_by_gradio.png")  # found by its bytes, not its name
    assert truths.get(copy).shape == (40, 60, 1) and truths.get(copy).sum() == 100
    other = tmp_path / "other.png"
    Image.fromarray(img + 1).save(other)  # same size on disk is likely, other bytes
    assert truths.get(other) is None and truths.get(None) is None and len(truths) == 1
    # SAM fills the box 10..29 x 10..19 (200 px) around the 100 px truth: Dice = 2 * 100 / 300
    out = R.segment(Stub(), str(png), None, "10,10,29,19", "box", tmp_path, truths.get(png))
    assert out["dice"]["sam"] == pytest.approx(2 / 3) and out["dice"]["unet"] == 0.0 and out["truth_px"] == 100
    k = 8  # a 40 x 60 slice is shown 8 x larger (480 px)
    assert tuple(out["sam_overlay"][15 * k, 19 * k + k - 1]) == (0, 230, 60), "the truth's right edge is drawn"
    row = examples_table([out]).iloc[0]  # notebook 05's table of the examples
    assert row["sam_dice"] == pytest.approx(2 / 3) and row["truth_px"] == 100 and row["unet_dice"] == 0.0
    text = C.summary(out, "box", Stub())
    assert "· Dice 0.667" in text and "· Dice 0.000" in text and "Ground truth: 100 px" in text


def test_examples_carry_their_ground_truth(synth_root, tmp_path):
    rows = write_examples(discover_cases(synth_root), tmp_path / "examples", n=2)
    assert [r[1] is None for r in rows] == [True, True, False] and all(r[2] for r in rows)
    png, _, truth_png = rows[0]
    vol, z, truth_nii = rows[2]
    case = discover_cases(synth_root)[0]
    wt = np.asarray(nib.load(case.seg).dataobj) > 0
    assert re.search(rf"_flair_z{z}\.png$", png) and Image.open(png).size == (240, 240)
    truths = Truths(rows)
    np.testing.assert_array_equal(truths.get(png)[:, :, 0], np.rot90(wt[:, :, z]))  # shown as the PNG is
    np.testing.assert_array_equal(truths.get(vol), wt)  # the volume's own layout
    back = nib.load(truth_nii)
    assert back.get_data_dtype() == np.uint8 and np.allclose(back.affine, nib.load(case.images["flair"]).affine)
    assert "ground truth, Dice" in D.example_label(*rows[0]) and "slice" not in D.example_label(*rows[0])
    assert D.example_label(vol, z).endswith(f"slice {z} (0-based index, as in the file)")


# ----------------------------------------------------------------------------- whole volume
def _volume(tmp_path, name="v.nii.gz"):
    vol = np.zeros((48, 40, 9), np.int16)
    vol[6:42, 5:35, 1:8] = np.random.default_rng(0).normal(100, 10, (36, 30, 7)).astype(np.int16)
    vol[20:30, 15:25, 3:6] = 300
    return str(nifti(tmp_path / name, vol, np.diag([-1.0, 1.0, 2.0, 1.0])))


def test_whole_volume_is_written_in_the_uploads_geometry(tiny, tmp_path, monkeypatch):
    path = _volume(tmp_path)
    ticks = []
    tiny.warmup = {"unet_first_ms": 9.0, "unet_ms": 1.0, "sam_first_ms": 9.0, "sam_ms": 1.0}
    out = VOL.segment_volume(tiny, path, tmp_path, None, lambda *a: ticks.append(a))
    assert out["n_slices"] == 7 and set(out["pred"]) == {"unet", "sam_litemedsam_unet_box"} and not out["sam_note"]
    assert ticks[0] == ("unet", 7, 7), "one batch of 8 holds the 7 brain slices"
    for f in out["files"]:
        assert re.search(r"/v_all_slices_(unet|sam_litemedsam_unet_box)_mask_[0-9a-f]{8}\.nii\.gz$", f)
        back = nib.load(f)
        assert back.shape == (48, 40, 9) and np.allclose(back.affine, np.diag([-1.0, 1.0, 2.0, 1.0]))
        assert back.get_data_dtype() == np.uint8
    unet = out["pred"]["unet"]
    s = out["stats"]["unet"]
    assert s["voxels"] == unet.sum() and s["ml"] == pytest.approx(unet.sum() * 2 / 1000)  # 1 x 1 x 2 mm voxels
    assert not unet[:, :, [0, 8]].any(), "slices without brain stay empty"
    # the same slice through the single-slice path gives the same U-Net mask (same orientation and grid)
    single = R.segment(tiny, path, 4, "", "unet_box", tmp_path)["res"]["unet"]
    assert np.mean(np.rot90(unet[:, :, 4]) != single) < 1e-3


def test_whole_volume_with_truth_reports_3d_dice(tiny, tmp_path):
    path = _volume(tmp_path)
    truth = np.zeros((48, 40, 9), bool)
    truth[20:30, 15:25, 3:6] = True
    tiny.warmup = {"unet_first_ms": 9.0, "unet_ms": 1.0, "sam_first_ms": 9.0, "sam_ms": 1e6}
    out = VOL.segment_volume(tiny, path, tmp_path, truth)
    assert set(out["pred"]) == {"unet"} and out["sam_note"].startswith("SAM skipped: about 7000 s for 7 slices")
    p = out["pred"]["unet"]
    assert out["stats"]["unet"]["dice"] == pytest.approx(2 * (p & truth).sum() / (p.sum() + truth.sum() or 1))
    text = C.volume_summary(out, 4, tiny)
    assert "(whole volume)" in text and "`_all_slices_`" in text and "SAM skipped" in text


def test_whole_volume_refusals(tiny, tmp_path, monkeypatch):
    png = tmp_path / "s.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(png)
    with pytest.raises(UploadError, match="is a single slice: press Segment"):
        VOL.segment_volume(tiny, str(png), tmp_path)
    with pytest.raises(UploadError, match="upload a NIfTI volume first"):
        VOL.segment_volume(tiny, None, tmp_path)
    monkeypatch.setattr(VOL, "MAX_VOXELS", 1000)
    with pytest.raises(UploadError, match="w.nii.gz: 0.0 M voxels is over the whole-volume limit"):
        VOL.segment_volume(tiny, _volume(tmp_path, "w.nii.gz"), tmp_path)


# ----------------------------------------------------------------------------- warm-up
def test_warm_up_runs_once_and_is_said(tmp_path):
    torch.manual_seed(0)
    pred = Predictor(UNet(base_channels=4), 64)
    w = pred.warm_up()
    assert set(w) == {"unet_first_ms", "unet_ms", "sam_first_ms", "sam_ms"} and w["sam_ms"] is None
    assert pred.warm_up() is w, "once per predictor"
    D.build_demo(pred, None, tmp_path)
    assert pred.warmup is w
    assert "ran twice on a made-up slice at start-up" in C._warm_line(pred)
