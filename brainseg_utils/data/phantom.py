"""Drawing one synthetic brain-MRI case (a digital phantom): anatomy, tumours, per-modality contrast.

``draw_case(rng, depth, look_rng, wide)`` returns float32 intensity volumes (240 x 240 x ``depth``, one per
modality, arbitrary units >= 0, background exactly 0) and uint8 BraTS labels; ``synthetic.py`` seeds it
per case and writes the dataset.

What makes it stand in for MRI:
  * anatomy from the skull base to the vertex (``phantom_anatomy.py``): temporal lobes and the
    orbitofrontal base as separate islands on inferior slices, cerebellum with folia, brainstem,
    two hemispheres at the vertex, a folded cortical ribbon with partial volume, deep grey nuclei,
    ventricles, and normal FLAIR hyperintensities (periventricular caps and rim, white-matter spots);
  * tumours across the BraTS range (``phantom_tumours.py``): deep or cortical, ring-enhancing with
    necrosis, solid, non-enhancing low grade, multifocal, small; infiltrative edema that fades;
  * CONTRAST DRAWN PER CASE (``draw_contrast``) within ranges of clinical FLAIR, relative to white matter
    (WM = 1): CSF nulled (0.08-0.3), cortex usually brighter than white matter (0.92-1.4; below 1 where
    partial volume with CSF wins), periventricular hyperintensities 1.15-1.6, edema 1.3-2.1 deep inside,
    fading to 1.12-1.3x the tissue it replaced at its labelled margin (annotators draw edema where the
    hyperintensity is still visible; version 2 faded it to 1.03x, below noise and texture), necrosis
    0.3-1.1 (as dark as CSF-ish or as normal tissue), low-grade core 1.4-2.2, enhancing rim 1.0-1.6.
    These are our reading of clinical FLAIR descriptions (CSF suppression, grey > white, edema and
    T2-FLAIR-bright low-grade cores), not values measured on BraTS (no BraTS data is available offline).
    T1, T1ce and T2 use a table with every mean jittered by +-10 % per case; then partial-volume blur
    (sigma 0.5-0.9 voxel), tissue texture, a smooth multiplicative bias field (strength 0.15-0.45: BraTS
    images are not bias-corrected) and Rician-like noise (1.5-3.5 % of white matter);
  * ``appearance="randomised"`` (``wide=True``) draws from wider ranges (domain randomisation beyond
    clinical FLAIR; bias up to 0.6, +-20 % on the other modalities).

The contrast draws come from their own random stream (``look_rng``), so both appearances share anatomy
and tumours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brainseg_utils.data.brats import MODALITIES
from brainseg_utils.data.phantom_anatomy import BG, CSF, ED, ET, GM, NCR, PVH, SHAPE_XY, WM, anatomy
from brainseg_utils.data.phantom_fields import bias_field, lobulated_distance, smooth_noise
from brainseg_utils.data.phantom_tumours import plant_tumours

__all__ = ["SHAPE_XY", "CONTRAST", "FLAIR_RANGES", "draw_case", "draw_contrast", "lobulated_distance"]

# Mean intensity per tissue class (BG, CSF, GM, WM, ED, NCR, ET, PVH) for T1, T1ce and T2, arbitrary units.
CONTRAST = {
    "t1": (0.0, 0.20, 0.55, 0.75, 0.45, 0.30, 0.50, 0.68),
    "t1ce": (0.0, 0.22, 0.58, 0.75, 0.48, 0.25, 1.10, 0.70),
    "t2": (0.0, 1.00, 0.55, 0.38, 0.90, 0.92, 0.62, 0.60),
}
# FLAIR relative to white matter (= 1): (low, high) per quantity; "wide" for appearance="randomised".
FLAIR_RANGES = {
    "csf": (0.08, 0.3),
    "gm": (0.92, 1.4),
    "pvh": (1.15, 1.6),
    "edema": (1.3, 2.1),
    "edema_margin": (1.12, 1.3),  # brightness at the labelled margin relative to the tissue it replaced
    "necrosis": (0.3, 1.1),
    "low_grade_core": (1.4, 2.2),
    "rim": (1.0, 1.6),
}
WIDE_RANGES = {
    "csf": (0.05, 0.45),
    "gm": (0.85, 1.5),
    "pvh": (1.1, 1.9),
    "edema": (1.25, 2.6),
    "edema_margin": (1.08, 1.4),
    "necrosis": (0.2, 1.4),
    "low_grade_core": (1.2, 2.6),
    "rim": (0.9, 1.9),
}
# T1, T1ce, T2: share of the edema's difference from the replaced tissue left at the labelled margin.
OTHER_EDEMA_MARGIN = (0.3, 0.6)
ACQUISITION = {"blur": (0.5, 0.9), "texture": (0.04, 0.08), "noise": (0.015, 0.035), "bias": (0.15, 0.45)}


def draw_contrast(rng: np.random.Generator, high_grade: bool, wide: bool = False) -> dict:
    """One case's contrast: {"lut": {modality: float32 means by class}, "edema_margin": per modality,
    "flair": the FLAIR draws relative to white matter, "blur", "texture", "noise", "bias"}."""
    ranges = WIDE_RANGES if wide else FLAIR_RANGES
    f = {k: float(rng.uniform(*v)) for k, v in ranges.items()}
    core = f["necrosis"] if high_grade else f["low_grade_core"]
    flair = np.array([0.0, f["csf"], f["gm"], 1.0, f["edema"], core, f["rim"], f["pvh"]], np.float32) * 0.45
    jitter = 0.2 if wide else 0.1
    lut = {"flair": flair}
    margin = {"flair": f["edema_margin"]}
    for m, table in CONTRAST.items():
        lut[m] = np.array(table, np.float32)
        lut[m][1:] *= rng.uniform(1.0 - jitter, 1.0 + jitter, len(table) - 1).astype(np.float32)
        margin[m] = float(rng.uniform(*OTHER_EDEMA_MARGIN))
    acq = {k: float(rng.uniform(*v)) for k, v in ACQUISITION.items()}
    if wide:
        acq["bias"] = float(rng.uniform(0.15, 0.6))
    return {"lut": lut, "edema_margin": margin, "flair": {k: round(v, 3) for k, v in f.items()}, **acq}


def _edema(lut: np.ndarray, base: np.ndarray, strength: np.ndarray, modality: str, margin: float) -> np.ndarray:
    """Edema intensities over the normal tissue they replaced (``base``: its intensities).

    FLAIR: ``margin`` times the replaced tissue at the labelled margin (visible there, as annotators draw
    edema where the hyperintensity ends), rising with ``strength`` to the case's edema level (never below
    the margin's brightness, so edema in bright cortex stays brighter than that cortex). Other modalities:
    ``margin`` of the difference to the edema level at the margin, all of it deep inside."""
    if modality == "flair":
        low = base * margin
        return low + np.maximum(lut[ED] - low, 0.0) * strength
    return base + (lut[ED] - base) * (margin + (1.0 - margin) * strength)


def _render(rng, tissue, normal, strength, modality: str, texture: np.ndarray, look: dict) -> np.ndarray:
    """Intensity volume for one modality: contrast, fading edema, partial volume, texture, bias, noise.

    ``normal``: the tissue classes before the tumours were planted (what the edema replaced)."""
    lut = look["lut"][modality]
    img = lut[tissue]
    edema = tissue == ED
    img[edema] = _edema(lut, lut[normal[edema]], strength[edema], modality, look["edema_margin"][modality])
    img = ndimage.gaussian_filter(img, look["blur"])
    img *= 1.0 + look["texture"] * texture
    img *= bias_field(rng, tissue.shape, look["bias"])
    img += look["noise"] * lut[WM] * rng.standard_normal(tissue.shape, dtype=np.float32)
    np.abs(img, out=img)  # magnitude images: Rician-like noise floor
    img[tissue == BG] = 0.0
    return img * rng.uniform(500, 1500)


def draw_case(
    rng: np.random.Generator, depth: int, look_rng: np.random.Generator | None = None, wide: bool = False
) -> dict:
    """One case: ``{modality: float32 (240, 240, depth), "seg": uint8 labels in {0, 1, 2, 4}, "meta": {...}}``.

    ``look_rng`` draws the contrast (default: a stream derived from ``rng``); ``wide`` widens its ranges."""
    anat = anatomy(rng, depth)
    normal = anat.tissue.copy()
    planted, high_grade, strength = plant_tumours(rng, anat)
    look_rng = look_rng if look_rng is not None else np.random.default_rng(rng.integers(2**63))
    look = draw_contrast(look_rng, high_grade, wide)
    texture = smooth_noise(rng, anat.tissue.shape, 1.5, 1)
    out = {m: _render(rng, anat.tissue, normal, strength, m, texture, look) for m in MODALITIES}
    seg = np.zeros(anat.tissue.shape, np.uint8)
    seg[anat.tissue == NCR] = 1
    seg[anat.tissue == ED] = 2
    seg[anat.tissue == ET] = 4
    out["seg"] = seg
    out["meta"] = {
        "tumours": planted,
        "grade": "HGG" if high_grade else "LGG",
        "anatomy": anat.meta,
        "flair_contrast": look["flair"],
    }
    return out


# Tissue classes, re-exported for tests and tools that inspect the hidden anatomy.
TISSUE = {"BG": BG, "CSF": CSF, "GM": GM, "WM": WM, "ED": ED, "NCR": NCR, "ET": ET, "PVH": PVH}
