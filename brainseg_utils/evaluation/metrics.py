"""Binary segmentation metrics with the BraTS empty-mask conventions.

All functions take boolean-like arrays of equal shape (2-D slices or 3-D volumes) and, for the
distance, the voxel spacing in mm. Conventions, also written into every result file:

  * Dice = 2|P∩G| / (|P| + |G|): 1 when both masks are empty, 0 when exactly one is.
  * IoU  = |P∩G| / |P∪G|: same empty-mask rule as Dice.
  * Precision = |P∩G| / |P|, recall = |P∩G| / |G|: 1 when both masks are empty; an empty
    prediction of a non-empty truth has precision 0 and recall 0; a non-empty prediction of an
    empty truth has precision 0 and recall 1 (nothing to recall).
  * HD95 (mm): the larger of the two directed 95th-percentile surface distances
    (prediction -> truth, truth -> prediction), surfaces being the mask voxels with a background
    face-neighbour, distances Euclidean in mm (spacing-aware), as MONAI's
    ``compute_hausdorff_distance(percentile=95)``. 0 when both masks are empty; when exactly one
    is, the diagonal of the image grid in mm (``empty_hd95``): 373.13 mm for a 240 x 240 x 155
    BraTS volume at 1 mm (the BraTS penalty), 339.41 mm for one 240 x 240 slice of it.

Per patient, beside these (``lesionwise``, re-exported here): the BraTS 2023 lesion-wise Dice and HD95
(``lesion_wise_dice_hd95``), the normalised surface Dice at 2 mm (``normalized_surface_dice``) and the
false-positive volume in mL (``false_positive_volume_ml``); ``volume_metrics`` gives all of them for one case.
"""

from __future__ import annotations

import numpy as np

from brainseg_utils.evaluation.lesionwise import CASE_METRICS as CASE_METRICS
from brainseg_utils.evaluation.lesionwise import CONVENTIONS as _VOLUME_CONVENTIONS
from brainseg_utils.evaluation.lesionwise import (  # noqa: F401  (re-exported: the metrics the field reports)
    LESION_HD95_PENALTY,
    NSD_COLUMN,
    false_positive_volume_ml,
    lesion_wise_dice_hd95,
    normalized_surface_dice,
    volume_metrics,
)
from brainseg_utils.evaluation.surfaces import as_pair as _pair
from brainseg_utils.evaluation.surfaces import as_spacing, hd95_of

HD95_EMPTY_PENALTY = 373.13  # mm: sqrt(240^2 + 240^2 + 155^2), a BraTS volume's diagonal
METRICS = ("dice", "iou", "precision", "recall", "hd95")
CONVENTIONS = {
    "dice": "2|P∩G|/(|P|+|G|); 1 if both empty, 0 if exactly one is empty",
    "iou": "|P∩G|/|P∪G|; 1 if both empty, 0 if exactly one is empty",
    "precision": "|P∩G|/|P|; 1 if both empty; 0 if the prediction is empty and the truth is not",
    "recall": "|P∩G|/|G|; 1 if the truth is empty (nothing to recall); 0 if it is not and the prediction is empty",
    "hd95": "mm; max of the two directed 95th-percentile surface distances (MONAI convention); "
    f"0 if both empty; if exactly one is empty, the image grid's diagonal in mm: {HD95_EMPTY_PENALTY} "
    "for a 240x240x155 BraTS volume (per patient), 339.41 for a 240x240 slice (per slice)",
    "threshold": "sigmoid probability > 0.5",
    "hd95_summary": "per-patient HD95 is summarised as mean and as median [IQR: 25th, 75th percentile]: "
    "the penalty for an empty mask makes the mean fragile",
    **_VOLUME_CONVENTIONS,
}


def dice(pred, gt) -> float:
    p, g = _pair(pred, gt)
    total = p.sum() + g.sum()
    return 1.0 if total == 0 else float(2.0 * (p & g).sum() / total)


def iou(pred, gt) -> float:
    p, g = _pair(pred, gt)
    union = (p | g).sum()
    return 1.0 if union == 0 else float((p & g).sum() / union)


def precision(pred, gt) -> float:
    p, g = _pair(pred, gt)
    if not p.any():
        return 1.0 if not g.any() else 0.0
    return float((p & g).sum() / p.sum())


def recall(pred, gt) -> float:
    p, g = _pair(pred, gt)
    if not g.any():
        return 1.0
    return float((p & g).sum() / g.sum())


def empty_hd95(shape, spacing=None) -> float:
    """HD95 (mm) when exactly one mask is empty: the diagonal of the image grid, ``sqrt(sum((n_i * s_i)^2))``."""
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    return round(float(np.sqrt(sum((n * float(s)) ** 2 for n, s in zip(shape, spacing, strict=True)))), 2)


def hd95(pred, gt, spacing=None) -> float:
    """95th-percentile Hausdorff distance in mm (see module docstring for the conventions)."""
    p, g = _pair(pred, gt)
    spacing = as_spacing(spacing, p.ndim)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return empty_hd95(p.shape, spacing)
    return hd95_of(p, g, spacing)


def all_metrics(pred, gt, spacing=None) -> dict[str, float]:
    """{"dice", "iou", "precision", "recall", "hd95"} for one slice or volume."""
    return {
        "dice": dice(pred, gt),
        "iou": iou(pred, gt),
        "precision": precision(pred, gt),
        "recall": recall(pred, gt),
        "hd95": hd95(pred, gt, spacing),
    }


def case_metrics(pred, gt, spacing=None) -> dict[str, float]:
    """The per-patient row of one (H, W, D) volume: ``all_metrics`` and ``volume_metrics`` (lesion-wise Dice / HD95
    and counts, NSD at 2 mm, false-positive mL)."""
    return {**all_metrics(pred, gt, spacing), **volume_metrics(pred, gt, spacing)}


def bootstrap_ci(values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the mean; (nan, nan) for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def paired_wilcoxon(a, b) -> dict:
    """Two-sided Wilcoxon signed-rank test on paired per-patient values (scipy; zero differences dropped).

    Returns {"n", "statistic", "p_value"}; p is NaN when fewer than 2 non-zero differences exist.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.shape} and {b.shape}")
    diff = a - b
    nz = np.count_nonzero(np.abs(diff) > 1e-12)
    if nz < 2:
        return {"n": int(len(a)), "statistic": float("nan"), "p_value": float("nan")}
    res = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return {"n": int(len(a)), "statistic": float(res.statistic), "p_value": float(res.pvalue)}
