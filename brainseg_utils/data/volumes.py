"""Loading a BraTS case's volumes (validated, normalised), writing a predicted mask, picking a slice.

Normalisation (``normalise_volume``): per volume, over brain voxels (voxels != 0; BraTS is
skull-stripped with background exactly 0), intensities are clipped to the 0.5th and 99.5th
percentiles and linearly rescaled to [0, 1]; background stays 0.

Binary target: whole tumour (WT) = seg > 0 = labels {1, 2, 4}. FLAIR alone supports WT.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.brats import MODALITIES, Case
from brainseg_utils.data.percentiles import nonzero_percentiles
from brainseg_utils.data.validate import check_geometry, check_image, check_seg, read_voxels
from brainseg_utils.runtime.io import atomic_write

_CHUNK = 1 << 18  # voxels per step of the in-place rescale (bounded float64 temporaries)


def normalise_volume(vol: np.ndarray, lower_pct: float = 0.5, upper_pct: float = 99.5, copy: bool = True) -> np.ndarray:
    """float32 in [0, 1]: clip brain voxels (!= 0) to their [lower, upper] percentiles, rescale; background 0.

    The percentiles are ``np.percentile``'s (method "linear") of the brain voxels as float32, bit for bit,
    taken without copying them (``percentiles.nonzero_percentiles``). ``copy=False`` with a writeable,
    contiguous float32 array normalises it in place (the upload path): no whole-volume temporary at all,
    only fixed-size chunks (a few MiB); the arithmetic (float64 per chunk, one rounding to float32) gives
    the same values as the copying path.
    """
    if (
        copy
        or vol.dtype != np.float32
        or not vol.flags.writeable
        or not (vol.flags.c_contiguous or vol.flags.f_contiguous)
    ):
        vol = np.array(vol, dtype=np.float32, copy=True)
    flat = vol.ravel(order="K")  # a view of a contiguous array (C or Fortran order)
    if not flat.any():
        return vol  # all zeros already
    lo, hi = nonzero_percentiles(flat, [lower_pct, upper_pct])
    scale = max(float(hi - lo), 1e-6)
    for i in range(0, flat.size, _CHUNK):
        v = flat[i : i + _CHUNK]
        b = v != 0
        t = v[b].astype(np.float64)  # == (v[b] - lo) / scale clipped, as float64, without more temporaries
        t -= lo
        t /= scale
        np.clip(t, 0.0, 1.0, out=t)
        v[b] = t
    return vol


def load_case(case: Case, modalities: tuple[str, ...] = ("flair",)) -> dict:
    """Validated, normalised arrays of one case.

    Returns ``{"image": float32 (C, H, W, D) in [0, 1], "wt": uint8 (H, W, D) in {0, 1} or None,
    "brain": bool (H, W, D), "affine": float64 (4, 4)}``; channel order follows ``modalities``.
    Geometry of every file is checked from headers; data checks run on what is loaded.
    """
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
    shape, affine, imgs = check_geometry(case)
    chans, brain = [], np.zeros(shape, bool)
    for m in modalities:
        data = read_voxels(case, case.images[m], imgs[m])
        check_image(case, m, case.images[m], data)
        brain |= data != 0
        chans.append(normalise_volume(data))
    wt = None
    if case.seg is not None:
        seg = read_voxels(case, case.seg, imgs["seg"])
        check_seg(case, seg)
        wt = (seg > 0).astype(np.uint8)
    return {"image": np.stack(chans), "wt": wt, "brain": brain, "affine": np.asarray(affine, np.float64)}


def save_mask(mask: np.ndarray, affine: np.ndarray, header, path: str | os.PathLike) -> Path:
    """Write a binary mask as a uint8 NIfTI (1 = whole tumour) with the given affine and header, atomically.

    The header's data type and scaling are reset (uint8, slope 1, intercept 0): nibabel would otherwise
    keep the source image's dtype and scaling."""

    img = nib.Nifti1Image(np.asarray(mask).astype(np.uint8), affine, header)
    img.set_data_dtype(np.uint8)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=".nii.gz")


def best_slice(seg: np.ndarray) -> int:
    """Axial index (last axis) with the largest tumour area (the middle slice when there is no tumour)."""
    area = (np.asarray(seg) > 0).reshape(-1, seg.shape[2]).sum(0)
    return int(area.argmax()) if area.any() else seg.shape[2] // 2
