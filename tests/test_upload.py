"""upload.py: sniffing, header bounds, loading, memory bounds and the byte-bounded cache."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from uploads import nifti, raw_nifti_header, slice_png

from brainseg_utils.app import upload as U
from brainseg_utils.data.volumes import normalise_volume


@pytest.mark.parametrize("name, mode", [("a.png", "L"), ("b.png", "I;16"), ("c.jpg", "RGB"), ("d.tif", "L")])
def test_images_load_normalised(tmp_path, name, mode):
    up = U.load_upload(slice_png(tmp_path / name, mode=mode))
    assert up.kind == "image" and up.volume.shape == (80, 96, 1) and up.volume.dtype == np.float32
    assert up.volume.min() == 0.0 and up.volume.max() == pytest.approx(1.0)


def test_nifti_volume_loads(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.zeros((64, 64, 20), np.int16)
    vol[10:50, 10:50, :] = rng.normal(100, 10, (40, 40, 20)).astype(np.int16)
    vol[20:34, 20:34, 13] = 300  # the bright, tumour-like slice
    up = U.load_upload(nifti(tmp_path / "v.nii.gz", vol))
    assert up.kind == "nifti" and up.volume.shape == (64, 64, 20) and up.volume.dtype == np.float32
    np.testing.assert_array_equal(up.volume, normalise_volume(vol))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: (p.write_bytes(b""), p)[1], "the file is empty"),
        (
            lambda p: (p.write_text("just some text, no image here" * 20), p)[1],
            "expected a PNG, JPEG or TIFF image or a NIfTI-1",
        ),
        (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50), p)[1], "not a readable image"),
        (lambda p: (p.write_bytes(b"\x1f\x8b" + b"not really gzip" * 30), p)[1], "damaged gzip"),
        (lambda p: raw_nifti_header(p, (4000, 4000, 4000)), "over the 512 MiB limit"),
        (lambda p: raw_nifti_header(p, (8, 8, 8, 6)), r"4-D NIfTI with 6 volumes .*expected at most 4"),
        (lambda p: raw_nifti_header(p, (8, 8, 8, 2, 2)), "a 5-D NIfTI volume"),
        (lambda p: raw_nifti_header(p, (240, 240, 155), np.int16, b"\0" * 1000), "truncated"),
    ],
)
def test_bad_uploads(tmp_path, make, message):
    path = make(tmp_path / "upload.png")
    with pytest.raises(U.UploadError, match=message):
        U.load_upload(path)


def test_non_finite_blank_and_tiny(tmp_path):
    data = np.ones((32, 32, 4), np.float32)
    data[3, 3, 1] = np.nan
    with pytest.raises(U.UploadError, match="1 NaN or infinite values"):
        U.load_upload(nifti(tmp_path / "nan.nii", data))
    with pytest.raises(U.UploadError, match="blank"):
        U.load_upload(nifti(tmp_path / "zero.nii", np.zeros((32, 32, 2), np.float32)))
    with pytest.raises(U.UploadError, match="too small"):
        U.load_upload(nifti(tmp_path / "tiny.nii", np.ones((8, 8, 2), np.float32)))


def test_size_cap_and_decompression_bomb(tmp_path, monkeypatch):
    png = slice_png(tmp_path / "s.png")
    monkeypatch.setattr(U, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(U.UploadError, match="over the 0 MiB upload limit"):
        U.load_upload(png)
    monkeypatch.setattr(U, "MAX_UPLOAD_BYTES", 10**9)
    monkeypatch.setattr(U, "MAX_IMAGE_PIXELS", 1000)  # 80 x 96 = 7,680 px: a "bomb" at this limit
    with pytest.raises(U.UploadError, match="image too large"):
        U.load_upload(png)


# ----------------------------------------------------------------------------- header bounds
def _header_bytes(shape, dtype=np.float32, vox_offset=352, magic=b"n+1"):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = vox_offset
    hdr["magic"] = magic
    return hdr.binaryblock + b"\0" * 4


def test_large_header_extension_refused_before_reading(tmp_path):
    """A small .nii.gz whose vox_offset puts the data behind 64 MiB of (highly compressible) extension."""
    ext = 64 * 1024**2
    data = np.ones((32, 32, 4), np.float32).tobytes()
    path = tmp_path / "ext.nii.gz"
    path.write_bytes(gzip.compress(_header_bytes((32, 32, 4), vox_offset=352 + ext) + b"\0" * ext + data, 1))
    assert path.stat().st_size < 1024**2
    with pytest.raises(
        U.UploadError,
        match=r"ext\.nii\.gz: expected the data to start within 1 MiB of the header "
        r"\(vox_offset 352 to 1,048,928\); the header declares vox_offset 67,109,216",
    ):
        U.load_upload(path)
    low = tmp_path / "low.nii"
    low.write_bytes(_header_bytes((32, 32, 4), vox_offset=100) + data)
    with pytest.raises(U.UploadError, match="low.nii: .*vox.offset 100"):
        U.load_upload(low)


def test_cap_counts_the_float32_working_copies(tmp_path):
    """120 MiB of uint8 on disk passes a dims x on-disk-dtype cap of 512 MiB; loading it needs 5 bytes/voxel."""
    path = tmp_path / "big.nii"
    path.write_bytes(_header_bytes((1024, 1024, 120), np.uint8))
    with pytest.raises(
        U.UploadError,
        match=r"\(1024, 1024, 120\) x uint8 = 120 MiB on disk; loading needs 600 MiB "
        r"\(float32 volume and working memory\), over the 512 MiB limit",
    ):
        U.load_upload(path)


def test_upload_peak_is_at_most_5_bytes_per_voxel(tmp_path):
    """A BraTS-sized uint8 NIfTI: load + normalise allocate the float32 volume and fixed-size chunks only (the
    brain mask and the float32 copy of the brain values for the percentiles are gone), traced by tracemalloc."""
    import tracemalloc

    shape = (240, 240, 155)
    path = nifti(tmp_path / "v.nii", _brainish(shape, np.uint8))
    U.load_upload(nifti(tmp_path / "warm.nii", np.ones((20, 20, 2), np.uint8)))  # warm-up: lazy imports
    tracemalloc.start()
    try:
        up = U.load_upload(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    voxels = int(np.prod(shape))
    assert up.volume.shape == shape and up.volume.dtype == np.float32
    assert peak / voxels <= U.WORKING_BYTES_PER_VOXEL == 5, f"{peak / voxels:.2f} bytes per voxel"


def test_pair_header_complex_dtype_and_truncated_gzip(tmp_path):
    pair = tmp_path / "pair.nii"
    pair.write_bytes(_header_bytes((32, 32, 4), magic=b"ni1") + b"\0" * 16384)
    with pytest.raises(U.UploadError, match="single-file NIfTI-1 .*found the header of a .hdr/.img pair"):
        U.load_upload(pair)
    cplx = tmp_path / "c.nii"
    cplx.write_bytes(_header_bytes((32, 32, 2), np.complex64) + b"\0" * (32 * 32 * 2 * 8))
    with pytest.raises(U.UploadError, match="expected integer or float voxels; the header declares complex64"):
        U.load_upload(cplx)
    vol = np.random.default_rng(0).integers(1, 1000, (40, 40, 10)).astype(np.int16)
    full = gzip.compress(_header_bytes(vol.shape, np.int16) + vol.tobytes(order="F"))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(U.UploadError, match=r"cut\.nii\.gz: (damaged or truncated data|truncated).* of 32,000 bytes"):
        U.load_upload(cut)


def test_reader_matches_nibabel_with_scaling_and_byte_order(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 2000, (40, 36, 7)).astype(">i2")
    img = nib.Nifti1Image(vol, np.diag([2.0, 1.5, 3.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "be.nii.gz"
    nib.save(img, path)
    up = U.load_upload(path)
    ref = nib.load(path)
    np.testing.assert_allclose(up.volume, normalise_volume(np.asarray(ref.dataobj, np.float32)), atol=1e-6)
    np.testing.assert_allclose(up.affine, ref.affine)


# ----------------------------------------------------------------------------- cache in bytes
def test_cache_is_bounded_in_bytes(tmp_path, monkeypatch):
    vol = np.zeros((64, 64, 20), np.int16)
    vol[8:56, 8:56] = 100
    paths = [nifti(tmp_path / f"v{i}.nii", vol + i) for i in range(3)]
    one = 64 * 64 * 20 * 4  # float32 bytes of one volume
    cache = U.UploadCache(max_bytes=2 * one + 10)
    monkeypatch.setattr(U, "CACHE", cache)
    first = U.cached_upload(paths[0])
    assert U.cached_upload(paths[0]) is first and not first.volume.flags.writeable
    U.cached_upload(paths[1])
    assert len(cache) == 2 and cache.nbytes == 2 * one
    U.cached_upload(paths[0])  # most recently used now: v1 is the oldest
    U.cached_upload(paths[2])
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert U.cached_upload(paths[0]) is first, "the recently used entry stayed"
    small = U.UploadCache(max_bytes=one - 1)
    monkeypatch.setattr(U, "CACHE", small)
    assert U.cached_upload(paths[0]).volume.shape == (64, 64, 20) and len(small) == 0 and small.nbytes == 0


# ----------------------------------------------------------------------------- peak memory of a load
_PEAK_SCRIPT = r"""
import json, sys, tracemalloc
from brainseg_utils.app import upload

def status_kib(field):  # VmRSS now / VmHWM peak of this process image (ru_maxrss would carry the
    with open("/proc/self/status") as fh:  # parent's peak across fork + exec)
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) * 1024

upload.load_upload(sys.argv[2])  # warm-up: imports, Pillow plugins
base = status_kib("VmRSS")
tracemalloc.start()
up = upload.load_upload(sys.argv[1])
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"rss_extra": status_kib("VmHWM") - base, "traced_peak": traced, "float32": up.volume.nbytes}))
"""


def _brainish(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, dtype)
    inner = tuple(slice(s // 20, s - s // 20) for s in shape)  # ~85 % "brain"
    vol[inner] = rng.integers(20, 200, vol[inner].shape).astype(dtype)
    return vol


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("kind", ["uint8.nii", "int16.nii.gz", "rgb.png"])
def test_peak_memory_of_accepted_uploads(tmp_path, kind):
    """Peak extra memory of ``load_upload`` <= 3 x the float32 volume + 48 MiB (numpy allocations alone,
    traced: <= 3 x), whatever the on-disk dtype; measured in a fresh process."""
    if kind == "uint8.nii":
        path = nifti(tmp_path / "v.nii", _brainish((256, 256, 128), np.uint8))
    elif kind == "int16.nii.gz":
        path = nifti(tmp_path / "v.nii.gz", _brainish((192, 192, 96), np.int16))
    else:
        path = tmp_path / "v.png"
        Image.fromarray(np.stack([_brainish((1500, 1500), np.uint8)] * 3, -1)).save(path, compress_level=1)
    warm = slice_png(tmp_path / "warm.png")
    nifti(tmp_path / "warm.nii.gz", np.ones((20, 20, 2), np.int16))
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    env = {"PYTHONPATH": str(Path(U.__file__).parents[2]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(warm)], capture_output=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    m = json.loads(done.stdout.decode().strip().splitlines()[-1])
    f32 = m["float32"]
    assert m["traced_peak"] <= 3 * f32, {k: v / 2**20 for k, v in m.items()}
    assert m["rss_extra"] <= 3 * f32 + 48 * 2**20, {k: v / 2**20 for k, v in m.items()}
