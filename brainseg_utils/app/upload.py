"""Untrusted uploads (demo): sniffing, bounds, loading, and a per-file cache bounded in bytes.

Owns ``UploadError``, ``sniff``, ``Upload``, ``load_upload`` and ``cached_upload``. The demo (``demo.py``)
keeps the UI and the Predictor.

What an upload is checked against, before anything large is allocated:
  * size on disk <= ``MAX_UPLOAD_BYTES``; not empty; magic bytes of PNG / JPEG / TIFF or NIfTI-1
    (single file ``n+1``; header-only ``.hdr``/``.img`` pairs are refused);
  * NIfTI header: 2-D or 3-D (trailing singleton dims dropped), or 4-D with ``MAX_CHANNELS`` or fewer
    volumes (X, Y, Z, C: one case's modalities stacked, as the Medical Segmentation Decathlon stores BraTS;
    each is normalised on its own), every dim >= 1, a real integer or float
    data type, ``vox_offset`` inside [352, 352 + ``MAX_HEADER_EXTENSION_BYTES``] (extensions are skipped,
    never parsed or kept), and the memory loading will take (``WORKING_BYTES_PER_VOXEL``: the float32
    volume plus fixed-size chunks; no whole-volume temporary) <= ``MAX_ARRAY_BYTES``;
    an uncompressed file must hold every byte the header declares;
  * images: pixel count x ``IMAGE_BYTES_PER_PIXEL`` <= ``MAX_ARRAY_BYTES`` from the header, before
    decoding, plus Pillow's decompression-bomb guard (``MAX_IMAGE_PIXELS``);
  * after loading: at least 16 x 16 pixels per slice, finite values, not blank.

NIfTI data is read slice by slice straight into one preallocated float32 array (header scaling applied in
place), checked and normalised in place in fixed-size chunks (``volumes.normalise_volume(copy=False)`` takes
its percentiles without copying the brain values), so the peak memory of a load is the float32 volume plus a
few MiB, whatever the on-disk dtype (<= 5 bytes per voxel, measured by a test). Every failure is an
``UploadError`` with a plain message naming the file, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import threading
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.volumes import normalise_volume

MAX_UPLOAD_BYTES = 256 * 1024**2  # on disk
MAX_CHANNELS = 4  # volumes of a 4-D NIfTI (flair, t1, t1ce, t2)
MAX_ARRAY_BYTES = 512 * 1024**2  # what loading will allocate (the float32 volume and working memory)
WORKING_BYTES_PER_VOXEL = 4 + 1  # float32 volume + 1 byte/voxel for the fixed-size chunks (a few MiB in all)
MAX_HEADER_EXTENSION_BYTES = 1024**2  # NIfTI extensions between the 352-byte header and the data
IMAGE_BYTES_PER_PIXEL = 4 + 4 + 3 + WORKING_BYTES_PER_VOXEL  # Pillow's buffer, its RGB copy, uint8 RGB, working
MAX_IMAGE_PIXELS = 64_000_000  # Pillow's decompression-bomb limit for 2-D images
CACHE_MAX_BYTES = 512 * 1024**2  # loaded volumes kept by ``cached_upload`` (sum of their float32 arrays)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_NIFTI_HEADER_BYTES = 352  # 348-byte header + 4-byte extension flag
_READ_CHUNK_BYTES = 8 * 1024**2


class UploadError(ValueError):
    """An upload that cannot be used; the message is shown to the user as is."""


@dataclass
class Upload:
    """A validated upload: ``volume`` float32 (H, W, D) in [0, 1] (D = 1 for a 2-D image), what is shown and
    checked; for a 4-D NIfTI its first volume (FLAIR, in the order flair, t1, t1ce, t2), and ``channels`` holds
    all of them, float32 (H, W, D, C), each normalised on its own (``volume`` is a view of channel 0)."""

    kind: str  # "image" or "nifti"
    volume: np.ndarray
    name: str
    affine: np.ndarray | None = None
    header: object = None  # nib.Nifti1Header without extensions (NIfTI only)
    channels: np.ndarray | None = None  # (H, W, D, C) of a 4-D NIfTI, else None

    @property
    def n_channels(self) -> int:
        return 1 if self.channels is None else int(self.channels.shape[3])

    def model_input(self) -> np.ndarray:
        """(C, H, W, D): what a U-Net with C input channels takes (a view, no copy)."""
        return self.volume[None] if self.channels is None else np.moveaxis(self.channels, 3, 0)


# ----------------------------------------------------------------------------- header checks
def _nifti_header(head: bytes, name: str) -> nib.Nifti1Header:
    if len(head) < 348:
        raise UploadError(
            f"{name}: expected a PNG, JPEG or TIFF image or a NIfTI-1 volume; {len(head)} bytes "
            "is too short for either header"
        )
    le, be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    if 348 not in (le, be) or head[344:347] not in (b"n+1", b"ni1"):
        raise UploadError(
            f"{name}: expected a PNG, JPEG or TIFF image or a NIfTI-1 volume; the file's first bytes match none of them"
        )
    if head[344:347] == b"ni1":
        raise UploadError(
            f"{name}: expected a single-file NIfTI-1 (.nii / .nii.gz); found the header of a "
            ".hdr/.img pair, whose data is in another file"
        )
    try:
        return nib.Nifti1Header.from_fileobj(io.BytesIO(head[:348]))
    except Exception as exc:
        raise UploadError(f"{name}: unreadable NIfTI header ({exc})") from exc


@dataclass(frozen=True)
class _NiftiLayout:
    dims: tuple[int, ...]  # (X, Y) or (X, Y, Z) after dropping trailing singleton dims
    dtype: np.dtype  # on-disk dtype, byte order included
    offset: int  # vox_offset: where the data starts
    header: nib.Nifti1Header
    gzip: bool = False


def _nifti_layout(hdr: nib.Nifti1Header, name: str) -> _NiftiLayout:
    raw = [int(d) for d in hdr["dim"][1 : 1 + int(hdr["dim"][0])]] if 1 <= int(hdr["dim"][0]) <= 7 else None
    if not raw or min(raw) < 1:
        raise UploadError(f"{name}: expected NIfTI dims >= 1; the header declares dim = {hdr['dim'].tolist()}")
    dims = tuple(raw)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) == 4 and dims[3] > MAX_CHANNELS:
        raise UploadError(
            f"{name}: a 4-D NIfTI with {dims[3]} volumes {dims}; expected at most {MAX_CHANNELS} "
            "(the modalities flair, t1, t1ce, t2 of one case, stacked in that order)"
        )
    if len(dims) not in (2, 3, 4):
        raise UploadError(
            f"{name}: a {len(dims)}-D NIfTI volume {dims}; upload a 2-D slice, a 3-D volume or a 4-D stack of "
            "modalities (X, Y, Z, C)"
        )
    try:
        dtype = hdr.get_data_dtype()
    except Exception as exc:
        raise UploadError(f"{name}: unknown NIfTI data type code {int(hdr['datatype'])}") from exc
    if dtype.kind not in "iuf" or dtype.itemsize > 8 or dtype.names is not None:
        raise UploadError(f"{name}: expected integer or float voxels; the header declares {dtype}")
    offset = float(hdr["vox_offset"])
    if not _NIFTI_HEADER_BYTES <= offset <= _NIFTI_HEADER_BYTES + MAX_HEADER_EXTENSION_BYTES or offset != int(offset):
        raise UploadError(
            f"{name}: expected the data to start within {MAX_HEADER_EXTENSION_BYTES / 2**20:.0f} MiB "
            f"of the header (vox_offset {_NIFTI_HEADER_BYTES} to "
            f"{_NIFTI_HEADER_BYTES + MAX_HEADER_EXTENSION_BYTES:,}); the header declares "
            f"vox_offset {offset:,.0f}"
        )
    n = int(np.prod(dims, dtype=np.int64))
    need = n * WORKING_BYTES_PER_VOXEL
    if need > MAX_ARRAY_BYTES:
        raise UploadError(
            f"{name}: the header declares {dims} x {dtype} = {n * dtype.itemsize / 2**20:.0f} MiB on "
            f"disk; loading needs {need / 2**20:.0f} MiB (float32 volume and working memory), over the "
            f"{MAX_ARRAY_BYTES / 2**20:.0f} MiB limit"
        )
    return _NiftiLayout(dims, dtype, int(offset), hdr)


def _is_gzip(magic: bytes) -> bool:
    return magic[:2] == b"\x1f\x8b"


def sniff(path: str | os.PathLike, max_bytes: int | None = None) -> str:
    """ "image" or "nifti" after the checks of the module docstring that need no decoding; raises ``UploadError``."""
    return _sniff(Path(path), max_bytes)[0]


def _sniff(path: Path, max_bytes: int | None = None) -> tuple[str, _NiftiLayout | None]:
    max_bytes = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    name = path.name
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    if size > max_bytes:
        raise UploadError(f"{name}: {size / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB upload limit")
    with open(path, "rb") as fh:
        head = fh.read(_NIFTI_HEADER_BYTES)
    magic = head[:4]
    if magic[:4] == b"\x89PNG" or magic[:3] == b"\xff\xd8\xff" or magic in (b"II*\x00", b"MM\x00*"):
        return "image", None
    if _is_gzip(magic):
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(_NIFTI_HEADER_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise UploadError(f"{name}: a damaged gzip file ({exc})") from exc
    layout = _nifti_layout(_nifti_header(head, name), name)
    if _is_gzip(magic):
        return "nifti", dataclasses.replace(layout, gzip=True)
    need = int(np.prod(layout.dims, dtype=np.int64)) * layout.dtype.itemsize
    if size < layout.offset + need:
        raise UploadError(
            f"{name}: truncated: the header declares {need:,} bytes of data, the file holds "
            f"{max(0, size - layout.offset):,}"
        )
    return "nifti", layout


# ----------------------------------------------------------------------------- loading
def _read_exact(fh, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        block = fh.read(min(n - got, _READ_CHUNK_BYTES))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_nifti(path: Path, layout: _NiftiLayout) -> np.ndarray:
    """float32 (X, Y, Z) or (X, Y, Z, C), Fortran order as on disk, header scaling applied; read one z-slice at a
    time (a 4-D file's volumes one after the other, as stored)."""
    dims = (*layout.dims, 1) if len(layout.dims) == 2 else layout.dims
    nx, ny, nz = dims[0], dims[1], int(np.prod(dims[2:], dtype=np.int64))
    per_slice = nx * ny * layout.dtype.itemsize
    out = np.empty((nx, ny, nz), np.float32, order="F")
    opener = gzip.open if layout.gzip else open
    done = 0
    try:
        with opener(path, "rb") as fh:
            skipped = _read_exact(fh, layout.offset)
            if len(skipped) == layout.offset:
                for z in range(nz):
                    buf = _read_exact(fh, per_slice)
                    if len(buf) < per_slice:
                        done += len(buf)
                        break
                    out[:, :, z] = np.frombuffer(buf, layout.dtype).reshape((nx, ny), order="F")
                    done += per_slice
    except (OSError, EOFError, zlib.error) as exc:
        raise UploadError(
            f"{path.name}: damaged or truncated data after {done:,} of {per_slice * nz:,} bytes "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if done < per_slice * nz:
        raise UploadError(
            f"{path.name}: truncated: the header declares {per_slice * nz:,} bytes of data, the file holds {done:,}"
        )
    slope, inter = layout.header.get_slope_inter()
    if slope is not None and slope != 1:
        out *= np.float32(slope)
    if inter is not None and inter != 0:
        out += np.float32(inter)
    return out.reshape(dims, order="F") if len(dims) == 4 else out  # a view: F order keeps z, then c, slowest


def _to_grey(img) -> np.ndarray:
    """float32 (H, W) from 8/16-bit grey, palette or RGB(A) (RGB averaged)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
    elif img.mode in ("L", "P", "1", "LA"):
        arr = np.asarray(img.convert("L"), dtype=np.float32)
    else:
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))  # uint8 (H, W, 3)
        arr = rgb.sum(-1, dtype=np.float32)
        del rgb
        arr /= np.float32(3)  # == rgb.astype(float32).mean(-1), without the float32 RGB copy
    if arr.ndim != 2:
        raise UploadError(f"unsupported image layout {arr.shape}")
    return arr


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                need = w * h * IMAGE_BYTES_PER_PIXEL
                if need > MAX_ARRAY_BYTES:
                    raise UploadError(
                        f"{path.name}: a {w} x {h} image needs {need / 2**20:.0f} MiB to load "
                        f"(working copies included), over the {MAX_ARRAY_BYTES / 2**20:.0f} MiB limit"
                    )
                img.load()
                return _to_grey(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"{path.name}: image too large ({exc}); the limit is {MAX_IMAGE_PIXELS:,} pixels") from exc
    except UploadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"{path.name}: not a readable image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _count_non_finite(vol: np.ndarray) -> int:
    """NaN and infinite voxels of a contiguous array, counted in chunks (no whole-volume bool mask)."""
    flat = vol.ravel(order="K")
    step = 1 << 20
    return sum(int(flat[i : i + step].size - np.isfinite(flat[i : i + step]).sum()) for i in range(0, flat.size, step))


def load_upload(path: str | os.PathLike) -> Upload:
    """Validate then load an upload (see module docstring). Raises ``UploadError``."""
    path = Path(path)
    kind, layout = _sniff(path)
    if kind == "image":
        vol, affine, header = _load_image(path)[:, :, None], None, None
    else:
        vol = _read_nifti(path, layout)
        header = layout.header
        affine = header.get_best_affine()
    if min(vol.shape[:2]) < 16:
        raise UploadError(f"{path.name}: slices of {vol.shape[0]} x {vol.shape[1]} pixels are too small (16 minimum)")
    bad = _count_non_finite(vol)
    if bad:
        raise UploadError(f"{path.name}: {bad} NaN or infinite values")
    if vol.ndim == 4:
        for c in range(vol.shape[3]):  # each modality normalised on its own, in place (F order: contiguous)
            if not vol[..., c].any():
                raise UploadError(f"{path.name}: volume {c} of the 4-D stack is blank (all zeros)")
            normalise_volume(vol[..., c], copy=False)
        return Upload(kind, vol[..., 0], path.name, affine, header, channels=vol)
    if not vol.any():
        raise UploadError(f"{path.name}: the image is blank (all zeros)")
    return Upload(kind, normalise_volume(vol, copy=False), path.name, affine, header)


# ----------------------------------------------------------------------------- cache
def _nbytes(up: Upload) -> int:
    return (up.volume if up.channels is None else up.channels).nbytes


class UploadCache:
    """Least-recently-used uploads, bounded by the bytes of their volumes (not by a count of entries).

    An upload larger than the whole budget is returned but not kept. Thread-safe: Gradio runs event
    handlers in worker threads.
    """

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Upload] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(_nbytes(u) for u in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, path: str | os.PathLike) -> Upload:
        st = Path(path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        up = load_upload(path)  # outside the lock: other users are not blocked by a slow load
        up.volume.setflags(write=False)  # shared between requests: nobody may modify it
        if up.channels is not None:
            up.channels.setflags(write=False)
        size = _nbytes(up)
        with self._lock:
            if size <= self.max_bytes:
                self._items[key] = up
                self._items.move_to_end(key)
                total = sum(_nbytes(u) for u in self._items.values())
                while total > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    total -= _nbytes(old)
        return up


CACHE = UploadCache()


def cached_upload(path: str | os.PathLike) -> Upload:
    """``load_upload`` once per file version (path, mtime, size), from a cache bounded in bytes
    (``CACHE_MAX_BYTES``): moving the slice slider or pressing Segment again does not re-read and
    re-normalise the whole volume. The returned volume is read-only."""
    return CACHE.get(path)
