"""Drawing one synthetic brain-MRI case (a digital phantom): anatomy, tumours, per-modality contrast.

``draw_case(rng, depth, appearance_rng)`` returns float32 intensity volumes (240 x 240 x ``depth``, one
per modality, arbitrary units >= 0, background exactly 0) and uint8 BraTS labels; ``synthetic.py`` seeds
it per case and writes the dataset.

What makes it stand in for MRI:
  * a brain whose ellipsoidal shape is deformed by a smooth random field per case;
  * white matter inside, a folded grey-matter cortex with CSF-filled sulci, two lateral
    ventricles (dark on FLAIR and T1, bright on T2);
  * 1-3 tumours per case, radius 4-25 mm, irregular boundaries, sometimes near the brain edge:
    high-grade ones have a necrotic core (1) inside an enhancing rim (4), low-grade ones a
    non-enhancing core (1) only; all are wrapped in finger-like edema (2);
  * per-modality contrasts in the right direction (edema bright on FLAIR/T2, rim bright on T1ce,
    CSF dark on FLAIR), partial-volume blur, tissue texture, a smooth multiplicative bias field
    and Rician-like noise;
  * one contrast table for all cases (``appearance="fixed"``, the default), or, with
    ``appearance="randomised"``, contrast and bias field drawn per case (``draw_appearance``): every
    tissue mean jittered by +-10 %, grey matter on FLAIR moved part of the way towards edema (up to
    0.8 x edema, as on real scans where cortex is bright) and a bias field of random strength, so
    "bright on FLAIR = tumour" works less often. Measured on the real-anatomy benchmark (5 seeds;
    docs/benchmarks.md): no clear gain in transfer at the quick profile's training budget and lower in-domain
    Dice, so it is an option, not the default;
  * tumour-free brain slices above and below every tumour.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brainseg_utils.data.brats import MODALITIES

SHAPE_XY = (240, 240)

# Tissue classes of the hidden "anatomy" volume.
BG, CSF, GM, WM, ED, NCR, ET = range(7)
# Mean intensity per tissue class (BG, CSF, GM, WM, ED, NCR, ET), arbitrary units.
CONTRAST = {
    "t1": (0.0, 0.20, 0.55, 0.75, 0.45, 0.30, 0.50),
    "t1ce": (0.0, 0.22, 0.58, 0.75, 0.48, 0.25, 1.10),
    "t2": (0.0, 1.00, 0.55, 0.38, 0.82, 0.92, 0.62),
    "flair": (0.0, 0.10, 0.60, 0.45, 1.00, 0.55, 0.80),
}
# Randomised appearance (``draw_appearance``): tissue means x U(1 - j, 1 + j); FLAIR grey matter moved
# U(0, GM_SHIFT) of the way to edema, at most GM_CAP x edema and white matter at least 0.08 below it;
# bias-field strength BIAS_STRENGTH x (1 + U(*BIAS_JITTER)). The mildest of the variants measured on the
# real-anatomy benchmark (docs/benchmarks.md): a larger shift or graded edema cost more
# in-domain Dice.
CONTRAST_JITTER = 0.1
GM_SHIFT = 0.4
GM_CAP = 0.8
BIAS_STRENGTH = 0.15
BIAS_JITTER = (-0.3, 0.7)


# ----------------------------------------------------------------------------- random fields
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights mapping a coarse axis onto a fine one."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = np.zeros((n_out, n_in), np.float32)
    np.add.at(w, (np.arange(n_out), lo), 1.0 - (pos - lo))
    np.add.at(w, (np.arange(n_out), hi), pos - lo)
    return w


def lobulated_distance(dist: np.ndarray, radius: float, noise: np.ndarray, amplitude: float) -> np.ndarray:
    """``dist / (radius * (1 + amplitude * noise))``: < 1 inside a lobulated ball. The local radius factor is
    floored at 0.25: unit-std noise below ``-1 / amplitude`` (rare, but it happens in a small box) made it
    zero (division by zero) or negative, which labelled voxels far outside the ball as tumour."""
    return dist / (radius * np.maximum(1.0 + amplitude * noise, 0.25))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, factor: int) -> np.ndarray:
    """Band-limited Gaussian noise, unit std, correlation length ~``sigma`` voxels.

    Generated at ``shape / factor`` and upsampled linearly (three small matrix products,
    far cheaper than ``ndimage.zoom``): invisible once ``sigma / factor >= 2``.
    """
    small = tuple(max(4, -(-s // factor)) for s in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / factor, mode="wrap")
    f /= f.std() + 1e-8
    if factor > 1:
        f = np.einsum("ai,ijk->ajk", _interp_matrix(shape[0], small[0]), f)
        f = np.einsum("bj,ajk->abk", _interp_matrix(shape[1], small[1]), f)
        f = np.ascontiguousarray(f @ _interp_matrix(shape[2], small[2]).T)
    return f


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative MR bias field: exp of a random cubic polynomial in x, y, z."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    log_b = np.zeros(shape, np.float32)
    for k in range(4):  # sum_k A_k(x, y) * z**k: only four full-volume operations
        a_k = np.zeros(shape[:2], np.float32)
        for i in range(4 - k):
            for j in range(4 - k - i):
                if i + j + k:
                    a_k += rng.normal(0, strength / (i + j + k)) * np.outer(x**i, y**j)
        log_b += a_k[:, :, None] * (z**k)[None, None, :]
    return np.exp(log_b)


def _ellipsoid_r(shape, centre, radii) -> np.ndarray:
    x, y, z = (np.arange(n, dtype=np.float32) for n in shape)
    return np.sqrt(
        ((x[:, None, None] - centre[0]) / radii[0]) ** 2
        + ((y[None, :, None] - centre[1]) / radii[1]) ** 2
        + ((z[None, None, :] - centre[2]) / radii[2]) ** 2
    )


# ----------------------------------------------------------------------------- anatomy
def _anatomy(rng: np.random.Generator, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Tissue-class volume (uint8, 240x240xdepth) and the normalised brain radius field."""
    shape = (*SHAPE_XY, depth)
    zc = depth * rng.uniform(0.47, 0.53)
    centre = (120 + rng.uniform(-6, 6), 120 + rng.uniform(-6, 6), zc)
    radii = (rng.uniform(64, 76), rng.uniform(82, 94), depth * rng.uniform(0.40, 0.45))
    r = _ellipsoid_r(shape, centre, radii)
    r *= 1.0 + 0.07 * _smooth_noise(rng, shape, 30, 8)  # per-case shape deformation
    brain = r < 1.0

    tissue = np.zeros(shape, np.uint8)
    tissue[brain] = WM
    # Folded cortex: grey matter in an outer shell and along the zero-sheets of a smooth
    # field (gyri); CSF in the thin core of those sheets (sulci) and outside a thin margin.
    folds = _smooth_noise(rng, shape, 7, 2)
    shell = r > 0.84 + 0.05 * folds
    near_fold = (np.abs(folds) < 0.35) & (r > 0.62)
    tissue[brain & (shell | near_fold)] = GM
    tissue[brain & (np.abs(folds) < 0.07) & (r > 0.72)] = CSF
    tissue[brain & (r > 0.975)] = CSF
    # Two lateral ventricles either side of the midline, slightly anterior.
    for side in (-1, 1):
        vc = (centre[0] + side * rng.uniform(8, 12), centre[1] - rng.uniform(2, 10), zc + depth * 0.05)
        vr = (rng.uniform(4, 7), rng.uniform(24, 32), depth * rng.uniform(0.07, 0.10))
        tissue[_ellipsoid_r(shape, vc, vr) < 1.0] = CSF
    return tissue, r


def _tumours(rng: np.random.Generator, tissue: np.ndarray, r: np.ndarray) -> list[dict]:
    """Plant 1-3 tumours into ``tissue`` in place; returns their descriptions."""
    depth = tissue.shape[2]
    n = int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.10]))
    planted = []
    for _ in range(n):
        radius = float(np.clip(rng.lognormal(np.log(11), 0.45), 4, 25))
        high_grade = bool(rng.random() < 0.75)
        near_edge = bool(rng.random() < 0.2)
        # Centre: a brain voxel in the middle axial band, deep or near the edge.
        lo, hi = (0.78, 0.9) if near_edge else (0.2, 0.72)
        zlo, zhi = int(depth * 0.3), int(depth * 0.7)
        cand = np.argwhere((r[:, :, zlo:zhi] > lo) & (r[:, :, zlo:zhi] < hi))
        c = cand[rng.integers(len(cand))].astype(np.float32)
        c[2] += zlo
        edema = radius * rng.uniform(1.3, 2.2)
        ext = int(np.ceil(edema * 1.5)) + 2
        sl = tuple(slice(max(0, int(c[k]) - ext), min(tissue.shape[k], int(c[k]) + ext + 1)) for k in range(3))
        sub = tissue[sl]
        box = sub.shape
        grid = np.meshgrid(*(np.arange(s.start, s.stop, dtype=np.float32) for s in sl), indexing="ij")
        dist = np.sqrt(sum((g - c[k]) ** 2 for k, g in enumerate(grid)))
        core = lobulated_distance(dist, radius, _smooth_noise(rng, box, max(2.0, radius / 3), 1), 0.22)
        swell = lobulated_distance(dist, edema, _smooth_noise(rng, box, max(2.0, edema / 4), 1), 0.35)
        inside_brain = sub > BG
        sub[(swell < 1.0) & inside_brain] = ED
        if high_grade:
            necro = rng.uniform(0.35, 0.65)
            sub[(core < 1.0) & inside_brain] = ET
            sub[(core < necro) & inside_brain] = NCR
        else:
            sub[(core < 1.0) & inside_brain] = NCR
        planted.append(
            {
                "centre": [round(float(v), 1) for v in c],
                "radius_mm": round(radius, 1),
                "high_grade": high_grade,
                "near_edge": near_edge,
            }
        )
    return planted


def draw_appearance(rng: np.random.Generator | None, modality: str) -> tuple[np.ndarray, float]:
    """(tissue means indexed by class, bias-field strength) of one case and modality.

    ``rng=None``: the fixed contrast table and strength. Otherwise every non-background mean is scaled by
    U(0.9, 1.1); on FLAIR grey matter then moves U(0, GM_SHIFT) of the way towards edema, capped at
    GM_CAP x edema, and white matter is kept at least 0.08 below grey matter (the contrast direction of
    real FLAIR: edema > grey > white > CSF); the bias strength is BIAS_STRENGTH x (1 + U(*BIAS_JITTER))."""
    lut = np.array(CONTRAST[modality], np.float32)
    if rng is None:
        return lut, BIAS_STRENGTH
    lut[1:] *= rng.uniform(1.0 - CONTRAST_JITTER, 1.0 + CONTRAST_JITTER, 6).astype(np.float32)
    if modality == "flair":
        lut[GM] += rng.uniform(0.0, GM_SHIFT) * (lut[ED] - lut[GM])
        lut[GM] = min(lut[GM], lut[ED] * GM_CAP)
        lut[WM] = min(lut[WM], lut[GM] - 0.08)
    return lut, BIAS_STRENGTH * (1.0 + rng.uniform(*BIAS_JITTER))


def _render(
    rng: np.random.Generator, tissue: np.ndarray, modality: str, texture: np.ndarray, appearance_rng=None
) -> np.ndarray:
    """Intensity volume for one modality: contrast LUT, partial volume, texture, bias, noise."""
    lut, bias_strength = draw_appearance(appearance_rng, modality)
    img = ndimage.gaussian_filter(lut[tissue], 0.6)
    img *= 1.0 + 0.06 * texture
    img *= _bias_field(rng, tissue.shape, bias_strength)
    img += 0.025 * rng.standard_normal(tissue.shape, dtype=np.float32)
    np.abs(img, out=img)  # magnitude images: Rician-like noise floor
    img[tissue == BG] = 0.0
    return img * rng.uniform(500, 1500)


def draw_case(rng: np.random.Generator, depth: int, appearance_rng: np.random.Generator | None = None) -> dict:
    """One case from ``rng``: ``{modality: float32 (240, 240, depth), "seg": uint8 labels in {0, 1, 2, 4},
    "meta": {"tumours": [...], "grade": "HGG" | "LGG"}}``. ``appearance_rng=None``: the fixed contrast table."""
    tissue, r = _anatomy(rng, depth)
    planted = _tumours(rng, tissue, r)
    texture = _smooth_noise(rng, tissue.shape, 1.5, 1)
    out = {m: _render(rng, tissue, m, texture, appearance_rng) for m in MODALITIES}
    seg = np.zeros(tissue.shape, np.uint8)
    seg[tissue == NCR] = 1
    seg[tissue == ED] = 2
    seg[tissue == ET] = 4
    out["seg"] = seg
    out["meta"] = {"tumours": planted, "grade": "HGG" if (seg == 4).any() else "LGG"}
    return out
