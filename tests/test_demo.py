"""Demo: upload validation, prediction, and the app driven over HTTP with gradio_client."""

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from brainseg_utils import demo as D
from brainseg_utils.sam import SamDecoderModel, build_backend
from brainseg_utils.unet import UNet


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    lite = build_backend("litemedsam")
    return D.Predictor(UNet(base_channels=4), 64, SamDecoderModel(lite, "box", 64).eval(),
                       SamDecoderModel(lite, "none", 64).eval(), lite, "cpu", "synthetic")


def _slice_png(path, size=(80, 96), mode="L"):
    yy, xx = np.mgrid[: size[0], : size[1]]
    img = ((np.hypot(yy - 40, xx - 50) < 30) * 120 + (np.hypot(yy - 35, xx - 55) < 8) * 120).astype(np.uint8)
    if mode == "I;16":
        Image.fromarray(img.astype(np.uint16) * 200).save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([img] * 3, -1)).save(path)
    else:
        Image.fromarray(img).save(path)
    return path


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name, mode", [("a.png", "L"), ("b.png", "I;16"), ("c.jpg", "RGB"), ("d.tif", "L")])
def test_images_load_normalised(tmp_path, name, mode):
    up = D.load_upload(_slice_png(tmp_path / name, mode=mode))
    assert up.kind == "image" and up.volume.shape == (80, 96, 1) and up.volume.dtype == np.float32
    assert up.volume.min() == 0.0 and up.volume.max() == pytest.approx(1.0)


def test_nifti_volume_and_start_slice(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = rng.normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300  # the bright, tumour-like slice
    up = D.load_upload(_nifti(tmp_path / "v.nii.gz", vol))
    assert up.kind == "nifti" and up.volume.shape == (64, 64, 20)
    assert D.start_slice(up.volume) == 13


def _raw_nifti_header(path, shape, dtype=np.float32, data=b""):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: (p.write_bytes(b""), p)[1], "the file is empty"),
    (lambda p: (p.write_text("just some text, no image here" * 20), p)[1], "expected a PNG, JPEG or TIFF image or a NIfTI-1"),
    (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50), p)[1], "not a readable image"),
    (lambda p: (p.write_bytes(b"\x1f\x8b" + b"not really gzip" * 30), p)[1], "damaged gzip"),
    (lambda p: _raw_nifti_header(p, (4000, 4000, 4000)), "over the 512 MiB limit"),
    (lambda p: _raw_nifti_header(p, (8, 8, 8, 3)), "4-D NIfTI volume"),
    (lambda p: _raw_nifti_header(p, (240, 240, 155), np.int16, b"\0" * 1000), "truncated"),
])
def test_bad_uploads(tmp_path, make, message):
    path = make(tmp_path / "upload.png")
    with pytest.raises(D.UploadError, match=message):
        D.load_upload(path)


def test_non_finite_blank_and_tiny(tmp_path):
    data = np.ones((32, 32, 4), np.float32)
    data[3, 3, 1] = np.nan
    with pytest.raises(D.UploadError, match="1 NaN or infinite values"):
        D.load_upload(_nifti(tmp_path / "nan.nii", data))
    with pytest.raises(D.UploadError, match="blank"):
        D.load_upload(_nifti(tmp_path / "zero.nii", np.zeros((32, 32, 2), np.float32)))
    with pytest.raises(D.UploadError, match="too small"):
        D.load_upload(_nifti(tmp_path / "tiny.nii", np.ones((8, 8, 2), np.float32)))


def test_size_cap_and_decompression_bomb(tmp_path, monkeypatch):
    png = _slice_png(tmp_path / "s.png")
    monkeypatch.setattr(D, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(D.UploadError, match="over the 0 MiB upload limit"):
        D.load_upload(png)
    monkeypatch.setattr(D, "MAX_UPLOAD_BYTES", 10**9)
    monkeypatch.setattr(D, "MAX_IMAGE_PIXELS", 1000)  # 80 x 96 = 7,680 px: a "bomb" at this limit
    with pytest.raises(D.UploadError, match="image too large"):
        D.load_upload(png)


def test_parse_box():
    np.testing.assert_array_equal(D.parse_box("30, 10, 5, 40", 50, 60), [5, 10, 30, 40])
    assert D.parse_box("", 50, 60) is None
    with pytest.raises(D.UploadError, match="four numbers"):
        D.parse_box("1,2,3", 50, 60)
    with pytest.raises(D.UploadError, match="outside"):
        D.parse_box("100,100,120,120", 50, 60)


# ----------------------------------------------------------------------------- prediction
def test_predictor_outputs(predictor, tmp_path):
    out = D.segment(predictor, _slice_png(tmp_path / "s.png"), 0, "40,20,70,60", "box", tmp_path)
    r = out["res"]
    assert r["unet"].shape == (80, 96) and r["sam"].shape == (80, 96) and r["sam_ms"] > 0
    np.testing.assert_array_equal(r["box"], [40, 20, 70, 60])
    assert out["unet_overlay"].shape == (80, 96, 3) and out["unet_overlay"].dtype == np.uint8
    pngs = sorted(p for p in out["files"] if p.endswith(".png"))
    assert len(pngs) == 2
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[0])) > 0, r["sam"])
    none = D.segment(predictor, _slice_png(tmp_path / "t.png"), 0, "", "none", tmp_path)["res"]
    assert none["sam"].shape == (80, 96) and none["box"] is None


def test_nifti_masks_are_written_in_volume_space(predictor, tmp_path):
    vol = np.zeros((64, 64, 10), np.int16)
    vol[10:50, 12:52, :] = 100
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = _nifti(tmp_path / "v.nii.gz", vol, aff)
    out = D.segment(predictor, path, 4, "10,10,40,40", "box", tmp_path)
    nii = [p for p in out["files"] if p.endswith("sam_mask.nii.gz")][0]
    back = nib.load(nii)
    assert back.shape == (64, 64, 10) and np.allclose(back.affine, aff) and back.get_data_dtype() == np.uint8
    m = np.asarray(back.dataobj)
    np.testing.assert_array_equal(np.rot90(m[:, :, 4]), out["res"]["sam"])  # display = rot90 of the volume slice
    assert m[:, :, [0, 1, 2, 3, 5, 6, 7, 8, 9]].max() == 0
    with pytest.raises(D.UploadError, match="outside the volume"):
        D.segment(predictor, path, 10, "", "none", tmp_path)


# ----------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served(predictor, tmp_path_factory):
    demo = D.build_demo(predictor, None, tmp_path_factory.mktemp("work"))
    _, url, _ = demo.launch(prevent_thread_lock=True, inline=False, share=False, quiet=True,
                            server_name="127.0.0.1", max_file_size=D.MAX_UPLOAD_BYTES)
    from gradio_client import Client

    yield Client(url, verbose=False)
    demo.close()


def _call(client, path, z=0, box="", prompt="unet_box"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), z, box, prompt, api_name="/segment")


def test_http_png_nifti_and_box(served, predictor, tmp_path):
    png = _slice_png(tmp_path / "slice.png")
    unet_img, sam_img, info, files = _call(served, png, 0, "40,20,70,60", "box")
    direct = D.segment(predictor, png, 0, "40,20,70,60", "box", tmp_path)
    got = {p["name"] if isinstance(p, dict) else p for p in files}
    sam_png = next(p for p in got if str(p).endswith("sam_mask.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(sam_png)) > 0, direct["res"]["sam"])
    assert "U-Net:" in info and "SAM (box)" in info
    vol = np.zeros((64, 64, 12), np.int16)
    vol[8:56, 8:56, :] = 100
    vol[20:34, 20:34, 7] = 500
    nii = _nifti(tmp_path / "vol.nii.gz", vol)
    _, _, info, files = _call(served, nii, 7, "", "none")
    names = [str(p["name"] if isinstance(p, dict) else p) for p in files]
    assert any(n.endswith("unet_mask.nii.gz") for n in names) and "slice 7 of 12" in info


def test_server_survives_bad_uploads(served, tmp_path):
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.png"
    bad.write_text("definitely not a picture" * 30)
    with pytest.raises(AppError, match="expected a PNG, JPEG or TIFF image or a NIfTI-1"):
        _call(served, bad)
    bomb = tmp_path / "bomb.nii"
    _raw_nifti_header(bomb, (5000, 5000, 500))
    with pytest.raises(AppError, match="over the 512 MiB limit"):
        _call(served, bomb)
    gz = tmp_path / "broken.nii.gz"
    gz.write_bytes(gzip.compress(b"x" * 400))
    with pytest.raises(AppError, match="NIfTI-1"):
        _call(served, gz)
    unet_img, *_ = _call(served, _slice_png(tmp_path / "fine.png"))
    assert unet_img is not None, "the next good request still works"
