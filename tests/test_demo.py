"""Demo: prediction, result files, and the app driven over HTTP with gradio_client (uploads: test_upload.py)."""

import gzip
import re
import threading

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from uploads import launch_local, nifti, raw_nifti_header, slice_png

from brainseg_utils.app import callbacks as C
from brainseg_utils.app import demo as D
from brainseg_utils.app import request as R
from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.upload import MAX_UPLOAD_BYTES, UploadError, load_upload
from brainseg_utils.models.sam.backends import build_backend
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.unet import UNet


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    lite = build_backend("litemedsam")
    return Predictor(
        UNet(base_channels=4),
        64,
        SamDecoderModel(lite, "box", 64).eval(),
        SamDecoderModel(lite, "none", 64).eval(),
        lite,
        "cpu",
        "synthetic",
    )


# ----------------------------------------------------------------------------- box, start slice
def test_start_slice_is_the_brightest(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = rng.normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300  # the bright, tumour-like slice
    assert R.start_slice(load_upload(nifti(tmp_path / "v.nii.gz", vol)).volume) == 13


def test_parse_box():
    np.testing.assert_array_equal(R.parse_box("30, 10, 5, 40", 50, 60), [5, 10, 30, 40])
    assert R.parse_box("", 50, 60) is None
    with pytest.raises(UploadError, match="four numbers"):
        R.parse_box("1,2,3", 50, 60)
    with pytest.raises(UploadError, match="outside"):
        R.parse_box("100,100,120,120", 50, 60)


# ----------------------------------------------------------------------------- prediction
def test_predictor_outputs(predictor, tmp_path):
    out = R.segment(predictor, slice_png(tmp_path / "s.png"), 0, "40,20,70,60", "box", tmp_path)
    r = out["res"]
    assert r["unet"].shape == (80, 96) and r["sam"].shape == (80, 96) and r["sam_ms"] > 0
    np.testing.assert_array_equal(r["box"], [40, 20, 70, 60])
    # shown enlarged 5 x (the longer side reaches 480 px), the masks stay on the slice's own grid
    assert out["unet_overlay"].shape == (400, 480, 3) and out["unet_overlay"].dtype == np.uint8
    pngs = sorted(p for p in out["files"] if p.endswith(".png"))
    assert len(pngs) == 2 and all(re.search(r"/s_(sam|unet)_mask_[0-9a-f]{8}\.png$", p) for p in pngs), pngs
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[0])) > 0, r["sam"])
    none = R.segment(predictor, slice_png(tmp_path / "t.png"), None, "", "none", tmp_path)["res"]  # an example row
    assert none["sam"].shape == (80, 96) and none["box"] is None


class _TwoBlobUNet(torch.nn.Module):
    """A stand-in U-Net whose mask is two squares: rows 5-14 x cols 8-19 and rows 40-45 x cols 40-47."""

    config = {"in_channels": 1}

    def forward(self, x):
        out = torch.full((x.shape[0], 1, *x.shape[-2:]), -10.0)
        out[:, :, 5:15, 8:20] = 10.0
        out[:, :, 40:46, 40:48] = 10.0
        return out


def test_unet_box_prompt_gives_one_box_per_component(predictor):
    """As the evaluation's cascade: one XYXY box per 8-connected U-Net component, largest first, all drawn."""
    p = Predictor(_TwoBlobUNet(), 64, predictor.sam_box, predictor.sam_none, predictor.backend, "cpu")
    sl = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    r = p(sl, None, "unet_box")
    np.testing.assert_array_equal(r["boxes"], [[8, 5, 19, 14], [40, 40, 47, 45]])
    np.testing.assert_array_equal(r["box"], [8, 5, 19, 14])
    assert r["sam"].shape == (64, 64) and r["sam_ms"] > 0
    one = p(sl, np.array([8, 5, 19, 14], np.float32), "box")
    assert one["boxes"] is None  # a drawn box is the only box
    rgb = R.overlay(sl, r["sam"], box=r["boxes"])
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 80)
    assert yellow[5, 8:20].all() and yellow[40, 40:48].all()  # both boxes' top edges


def test_nifti_masks_are_written_in_volume_space(predictor, tmp_path):
    vol = np.zeros((64, 64, 10), np.int16)
    vol[10:50, 12:52, :] = 100
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = nifti(tmp_path / "v.nii.gz", vol, aff)
    out = R.segment(predictor, path, 4, "10,10,40,40", "box", tmp_path)
    nii = [p for p in out["files"] if re.search(r"_sam_mask_[0-9a-f]{8}\.nii\.gz$", p)][0]
    assert any(re.search(r"/v_z4_sam_mask_[0-9a-f]{8}\.png$", p) for p in out["files"]), "0-based, as in the file"
    assert re.search(r"/v_z4_one_slice_sam_mask_[0-9a-f]{8}\.nii\.gz$", nii), "the name says it holds one slice"
    back = nib.load(nii)
    assert back.shape == (64, 64, 10) and np.allclose(back.affine, aff) and back.get_data_dtype() == np.uint8
    m = np.asarray(back.dataobj)
    np.testing.assert_array_equal(np.rot90(m[:, :, 4]), out["res"]["sam"])  # display = rot90 of the volume slice
    assert m[:, :, [0, 1, 2, 3, 5, 6, 7, 8, 9]].max() == 0
    with pytest.raises(UploadError, match="outside the volume"):
        R.segment(predictor, path, 10, "", "none", tmp_path)
    with pytest.raises(UploadError, match=r"v.nii.gz has 10 slices: choose one \(0-based index, 0 to 9\)"):
        R.segment(predictor, path, None, "", "none", tmp_path)


# ----------------------------------------------------------------------------- page callbacks
def _value(update):
    return update["value"] if isinstance(update, dict) else update


def test_page_shows_the_examples_slice_in_one_convention(tmp_path):
    show, _, _ = C.view_callbacks(tmp_path)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = np.random.default_rng(0).normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300  # the brightest slice is 13; the example says 5
    path = str(nifti(tmp_path / "ex.nii.gz", vol))
    file, slider, view, box, *results = show(path, 5)
    assert slider["value"] == 5 and slider["maximum"] == 19 and slider["visible"] and view and box == ""
    assert results[2].startswith(
        "ex.nii.gz, slice 5 (0-based index, as in the file: 0 to 19) · press Segment or Segment the whole volume"
    )
    assert show(path)[1]["value"] == 13, "an upload (no example slice) starts on the brightest slice"
    assert show(path, 99)[1]["value"] == 19
    png = str(slice_png(tmp_path / "ex.png"))
    _, slider, _, _, *results = show(png, None)
    assert not slider["visible"] and results[2].startswith("ex.png (2-D image) · press Segment")
    assert "whole volume" not in results[2]
    assert "slice (0-based index, as in the file)" == f"slice ({D.SLICE_CONVENTION})"


def test_new_file_example_or_slice_clears_the_results(tmp_path):
    show, on_slice, _ = C.view_callbacks(tmp_path)
    vol = np.zeros((32, 32, 6), np.int16)
    vol[4:28, 4:28] = 100
    path = str(nifti(tmp_path / "v.nii", vol))
    unet, sam, info, masks = show(path)[4:]
    assert (_value(unet), _value(sam), masks) == (None, None, None) and "press Segment" in info
    assert (unet["label"], sam["label"]) == C.PANEL_TITLES, "titles reset (no Dice of another image)"
    view, unet, sam, info, masks = on_slice(path, 2)
    assert view and (_value(unet), _value(sam), masks) == (None, None, None) and "slice 2 " in info
    assert show(None)[4:] == D.cleared() and on_slice(None, 3) == (None, *D.cleared())


def test_bad_upload_is_a_warning_not_an_error(tmp_path, caplog):
    show, _, _ = C.view_callbacks(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_text("definitely not a picture" * 30)
    with caplog.at_level("WARNING", logger=C.__name__), pytest.warns(UserWarning, match="expected a PNG"):
        file, slider, view, box, unet, sam, info, masks = show(str(bad))
    assert file is None and view is None and box == "" and (_value(unet), _value(sam), masks) == (None, None, None)
    assert slider["interactive"] and slider["visible"] and slider["maximum"] == D.SLIDER_MAX_BEFORE_UPLOAD
    assert info.startswith("**Not shown:** bad.png: expected a PNG, JPEG or TIFF image")
    assert [r.getMessage()[:30] for r in caplog.records] == ["upload refused: bad.png: expec"]
    assert all(r.exc_info is None for r in caplog.records), "one line, no traceback"


def test_prompt_choices_in_plain_words():
    import gradio as gr

    from brainseg_utils.models.sam.prompts import PROMPTS

    assert set(D.PROMPT_LABELS) == set(PROMPTS)
    with gr.Blocks():
        ui = D._layout("synthetic")
    assert ui.prompt.choices == [(label, key) for key, label in D.PROMPT_LABELS.items()]
    assert (
        ui.prompt.value == "unet_box" and "No prompt (SAM decoder trained without prompts)" in D.PROMPT_LABELS.values()
    )


# ----------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served(predictor, tmp_path_factory):
    demo = D.build_demo(predictor, None, tmp_path_factory.mktemp("work"))
    url = launch_local(demo, max_file_size=MAX_UPLOAD_BYTES)
    from gradio_client import Client

    yield Client(url, verbose=False)
    demo.close()


def _call(client, path, z=0, box="", prompt="unet_box"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), z, box, prompt, api_name="/segment")


def test_http_png_nifti_and_box(served, predictor, tmp_path):
    png = slice_png(tmp_path / "slice.png")
    unet_img, sam_img, info, files = _call(served, png, 0, "40,20,70,60", "box")
    direct = R.segment(predictor, png, 0, "40,20,70,60", "box", tmp_path)
    got = {p["name"] if isinstance(p, dict) else p for p in files}
    sam_png = next(p for p in got if re.search(r"_sam_mask_[0-9a-f]{8}\.png$", str(p)))
    np.testing.assert_array_equal(np.asarray(Image.open(sam_png)) > 0, direct["res"]["sam"])
    assert "U-Net:" in info and "SAM, prompt 'Box you draw (two clicks on the slice)'" in info
    assert "slice.png (2-D image)" in info and "slice 0" not in info
    vol = np.zeros((64, 64, 12), np.int16)
    vol[8:56, 8:56, :] = 100
    vol[20:34, 20:34, 7] = 500
    nii = nifti(tmp_path / "vol.nii.gz", vol)
    _, _, info, files = _call(served, nii, 7, "", "none")
    names = [str(p["name"] if isinstance(p, dict) else p) for p in files]
    assert (
        any(re.search(r"_unet_mask_[0-9a-f]{8}\.nii\.gz$", n) for n in names)
        and "vol.nii.gz, slice 7 (0-based index, as in the file: 0 to 11)" in info
    )


def test_server_survives_bad_uploads(served, tmp_path, capfd, caplog):
    """Refused requests reach the client as errors; the server logs one line each, no traceback."""
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.png"
    bad.write_text("definitely not a picture" * 30)
    with pytest.raises(AppError, match="expected a PNG, JPEG or TIFF image or a NIfTI-1"):
        _call(served, bad)
    bomb = tmp_path / "bomb.nii"
    raw_nifti_header(bomb, (5000, 5000, 500))
    with pytest.raises(AppError, match="over the 512 MiB limit"):
        _call(served, bomb)
    gz = tmp_path / "broken.nii.gz"
    gz.write_bytes(gzip.compress(b"x" * 400))
    with pytest.raises(AppError, match="NIfTI-1"):
        _call(served, gz)
    unet_img, *_ = _call(served, slice_png(tmp_path / "fine.png"))
    assert unet_img is not None, "the next good request still works"
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    refused = [r.getMessage() for r in caplog.records if r.name == C.__name__]
    assert len(refused) == 3 and refused[0].startswith("segment refused: bad.png: expected a PNG"), refused


# ----------------------------------------------------------------------------- concurrent users
def test_identical_results_are_distinct_files(predictor, tmp_path):
    """Gradio rewrites an array output in place at a path derived from its content; results go out as files
    with unique names instead, so two users with the same result never share (or rewrite) one file."""
    png = slice_png(tmp_path / "s.png")
    a = R.segment(predictor, png, 0, "", "unet_box", tmp_path)
    b = R.segment(predictor, png, 0, "", "unet_box", tmp_path)
    for key in ("unet_overlay_png", "sam_overlay_png"):
        assert a[key] != b[key]
        np.testing.assert_array_equal(np.asarray(Image.open(a[key])), np.asarray(Image.open(b[key])))
        np.testing.assert_array_equal(np.asarray(Image.open(a[key])), a[key.removesuffix("_png")])
    assert not set(a["files"]) & set(b["files"])


def test_twenty_concurrent_clients(tmp_path_factory, tmp_path):
    """20 clients at once on the same input: each gets a complete, decodable image equal to the expected
    overlay, or Gradio's "queue is full" message; the server answers afterwards. (A U-Net-only predictor
    keeps it fast: the race was in serving result files, not in the models.)"""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    torch.manual_seed(0)
    pred = Predictor(UNet(base_channels=4), 64)
    demo = D.build_demo(pred, None, tmp_path_factory.mktemp("work20"))
    url = launch_local(demo, max_file_size=MAX_UPLOAD_BYTES)
    try:
        png = slice_png(tmp_path / "same.png")
        expected = R.segment(pred, png, 0, "", "unet_box", tmp_path)
        clients = [Client(url, verbose=False, download_files=str(tmp_path / f"dl{i}")) for i in range(20)]
        results: list = [None] * 20
        barrier = threading.Barrier(20)

        def one(i):
            barrier.wait()
            try:
                results[i] = clients[i].predict(handle_file(str(png)), 0, "", "unet_box", api_name="/segment")
            except (QueueError, AppError) as exc:
                results[i] = exc
            except Exception as exc:  # anything else is a failure the assertions below report
                results[i] = ("unexpected", repr(exc))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        served = 0
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                assert "queue is full" in str(r).lower(), (i, repr(r))
                continue
            assert isinstance(r, tuple) and len(r) == 4, (i, r)
            unet_img, sam_img = r[0], r[1]
            for got, want in ((unet_img, expected["unet_overlay"]), (sam_img, expected["sam_overlay"])):
                with Image.open(got) as im:
                    im.load()  # raises on a truncated or empty file
                    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), want)
            served += 1
        assert served >= 1
        unet_img, *_ = clients[0].predict(handle_file(str(png)), 0, "", "unet_box", api_name="/segment")
        assert Image.open(unet_img).size == (480, 400), "the server still answers"
    finally:
        demo.close()


def test_prune_removes_only_old_request_folders(tmp_path):
    import os

    old_req, new_req, examples = tmp_path / "request-old", tmp_path / "request-new", tmp_path / "examples"
    for d in (old_req, new_req, examples):
        d.mkdir()
        (d / "f.png").write_bytes(b"x")
    for d in (old_req, examples):
        os.utime(d, (0, 0))
    R.prune_requests(tmp_path, max_age_s=600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples", "request-new"]
