"""Metrics the field reports beside Dice and HD95, on 3-D binary (whole-tumour) volumes: the BraTS 2023
lesion-wise Dice and HD95, MedSAM's normalised surface Dice (NSD) at 2 mm, and the false-positive volume.

Lesion-wise Dice and HD95 (``lesion_wise_dice_hd95``) follow the BraTS 2023 challenges' official code:
``metrics.py`` of https://github.com/rachitsaluja/BraTS-2023-Metrics (commit 43c9052, functions
``get_LesionWiseScores``, ``get_GTseg_combinedByDilation`` and ``get_LesionWiseResults``), with the
BraTS-GLI parameters (dilation factor 3, lesion threshold 50):

  1. Lesions are 3-D connected components with 26-connectivity (``cc3d.connected_components(...,
     connectivity=26)`` there; ``scipy.ndimage.label`` with a full 3x3x3 structure here: the same components).
  2. GT lesions are combined by dilation: the whole GT mask is dilated ``dilation_factor`` = 3 times with
     ``generate_binary_structure(3, 2)`` (18-neighbourhood); the GT voxels inside one 26-connected component
     of the dilated mask form one GT lesion. The GT itself is not changed.
  3. Each GT lesion is dilated again the same way; every predicted component that intersects the dilated
     lesion is matched to it (one component may match several lesions). The lesion's Dice and HD95 are
     those of the (undilated) lesion against the union of its matched components. A lesion with no match
     (false negative) scores Dice 0 and HD95 374 mm (the official code's ``inf`` -> 374).
  4. Predicted components matched to no GT lesion are false positives: Dice 0 and HD95 374 mm each.
  5. GT lesions of volume <= 50 mm^3 (voxel count x voxel volume, ``lesion_volume_thresh = 50``; 50 voxels
     at BraTS's 1 mm) are left out of the scores and the TP / FN counts, but the components matched to them
     are not false positives.
  6. Lesion-wise Dice = sum of the kept lesions' Dice / (kept lesions + FPs); lesion-wise HD95 = (sum of the
     kept lesions' HD95 + 374 x FPs) / (kept lesions + FPs). With nothing to average (no kept lesion and no
     FP, e.g. both masks empty) they are 1 and 0.

One difference, by choice: a matched lesion's HD95 is this project's HD95 (MONAI convention, ``surfaces``:
surface voxels, unweighted) where the official code uses DeepMind surface-distance's
``compute_robust_hausdorff`` (surfel-area-weighted percentile on the voxel-corner grid). Dice, matching,
counts, threshold and penalties are the official ones.

NSD (``normalized_surface_dice``): the surface Dice at a tolerance of 2 mm, as MedSAM reports it
(``evaluation/compute_metrics.py`` of bowang-lab/MedSAM: DeepMind's ``compute_surface_dice_at_tolerance``,
``tolerance=2.0``, the volume's spacing), in the same convention (``surfels``: surface elements on the
voxel-corner grid weighted by their marching-cubes area; equal to DeepMind's code to 1e-9 and tested against
MONAI's ``compute_surface_dice(use_subvoxels=True)``):
NSD = (area of the pred surface within 2 mm of the GT surface + area of the GT surface within 2 mm of the pred
surface) / (pred surface area + GT surface area), "within" meaning <=. ``convention="voxel"`` gives the
boundary-voxel variant instead (MONAI's ``use_subvoxels=False``: surface voxels, each counting 1).
Both masks empty: 1; exactly one empty: 0. (MedSAM also sets NSD to 0 when Dice <= 0.2; not done here.)

False-positive volume (``false_positive_volume_ml``): the total volume in mL of the predicted 26-connected
components that share no voxel with the GT (voxel count x voxel volume / 1000).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brainseg_utils.evaluation.surfaces import as_pair, as_spacing, hd95_of, nsd_from, surface_distances
from brainseg_utils.evaluation.surfels import surface_dice_at

LESION_STRUCTURE = ndimage.generate_binary_structure(3, 3)  # 26-connectivity (cc3d connectivity=26)
DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)  # 18-neighbourhood, the official dilation
DILATION_ITERATIONS = 3  # BraTS-GLI (also SSA, PED); BraTS-MEN and -MET use 1
MIN_LESION_MM3 = 50.0  # GT lesions <= this are ignored (BraTS-GLI/MEN/SSA/PED; BraTS-MET uses 2)
LESION_HD95_PENALTY = 374.0  # mm, a missed GT lesion or a false-positive component (official value)
NSD_TOLERANCE_MM = 2.0  # MedSAM's tolerance
NSD_COLUMN = f"nsd_{NSD_TOLERANCE_MM:g}mm"  # "nsd_2mm"
CASE_METRICS = ("lesion_dice", "lesion_hd95", NSD_COLUMN, "fp_ml")  # per-patient columns beside metrics.METRICS
CONVENTIONS = {
    "lesion_dice": "BraTS 2023 lesion-wise Dice (official code github.com/rachitsaluja/BraTS-2023-Metrics "
    "metrics.py, BraTS-GLI parameters): 26-connected components; GT lesions combined by 3 dilations "
    "(18-neighbourhood); predicted components intersecting a 3x-dilated GT lesion are its match; GT lesions "
    f"<= {MIN_LESION_MM3:g} mm^3 ignored; mean over kept GT lesions + false-positive components "
    "(missed lesions and FPs score 0); 1 if nothing to average",
    "lesion_hd95": "BraTS 2023 lesion-wise HD95, mm: same lesions and matches as lesion_dice, each matched lesion's "
    f"HD95 in this project's (MONAI) convention, {LESION_HD95_PENALTY:g} per missed lesion and per FP component; "
    "0 if nothing to average",
    NSD_COLUMN: f"normalised surface Dice at {NSD_TOLERANCE_MM:g} mm as MedSAM computes it (DeepMind "
    "surface-distance's compute_surface_dice_at_tolerance): surface elements on the voxel-corner grid weighted by "
    "their marching-cubes area, within tolerance = distance <= tolerance; 1 if both empty, 0 if one is; "
    "MedSAM's NSD = 0 below Dice 0.2 not applied",
    "fp_ml": "mL; volume of the predicted 26-connected components sharing no voxel with the ground truth",
    "lesion_counts": "n_gt_lesions (kept, above the threshold), n_tp / n_fn (kept GT lesions matched / missed), "
    "n_fp (unmatched predicted components), as the official Num_TP / Num_FN / Num_FP",
}


def _volumes(pred, gt, spacing, margin: int = DILATION_ITERATIONS) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Bool (H, W, D) masks cropped to the bounding box of ``pred | gt`` widened by ``margin`` (>= the dilations)
    voxels: every component, dilation and distance fits inside, and the image border stays where it was."""
    p, g = as_pair(pred, gt)
    if p.ndim != 3:
        raise ValueError(f"lesion metrics need 3-D volumes, got masks of shape {p.shape}")
    spacing = as_spacing(spacing, 3)
    both = p | g
    if not both.any():
        return p[:1, :1, :1], g[:1, :1, :1], spacing
    box = []
    for axis in range(3):
        hits = np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, p.shape[axis])))
    box = tuple(box)
    return p[box], g[box], spacing


def _grow(box: tuple[slice, ...], shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    """``box`` widened by ``margin`` voxels on every side, clipped to the image."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape, strict=True))


def _union(boxes) -> tuple[slice, ...]:
    boxes = list(boxes)
    return tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(len(boxes[0])))


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components: (int32 labels of ``mask``'s shape, 0 = background, 1..n; n)."""
    labels, n = ndimage.label(mask, LESION_STRUCTURE)
    return labels, int(n)


def _gt_lesions(g: np.ndarray, iterations: int) -> tuple[np.ndarray, int]:
    """GT lesions combined by dilation: each GT voxel labelled with the 26-connected component of the
    ``iterations``-times dilated GT it lies in (official ``get_GTseg_combinedByDilation``)."""
    labels = np.zeros(g.shape, np.int32)
    if not g.any():
        return labels, 0
    box = _grow(ndimage.find_objects(g.astype(np.uint8))[0], g.shape, iterations)  # the dilation stays inside
    dilated = ndimage.binary_dilation(g[box], DILATION_STRUCTURE, iterations=iterations)
    combined, n = _components(dilated)
    labels[box] = combined * g[box]
    return labels, n


def _matched_scores(p_lab, p_boxes, ids, g_lab, k, box, spacing) -> tuple[float, float]:
    """(Dice, HD95 mm) of GT lesion ``k`` (inside ``box``) against the union of predicted components ``ids``."""
    crop = _union([box] + [p_boxes[i - 1] for i in ids])
    p = np.isin(p_lab[crop], ids)
    g = g_lab[crop] == k
    dice = float(2.0 * (p & g).sum() / (p.sum() + g.sum()))
    return dice, hd95_of(p, g, spacing)


def _lesion_wise(p_lab, n_pred, g, spacing, iterations, min_mm3) -> dict:
    """Lesion-wise scores from the prediction's components (``p_lab``, ``n_pred``); see the module docstring."""
    g_lab, _ = _gt_lesions(g, iterations)
    voxel_mm3 = float(np.prod(spacing))
    p_boxes = ndimage.find_objects(p_lab, max_label=n_pred) if n_pred else []
    matched, scores, n_tp, n_fn, n_ignored = set(), [], 0, 0, 0
    for k, box in enumerate(ndimage.find_objects(g_lab), start=1):
        if box is None:
            continue
        roi_box = _grow(box, g.shape, iterations)
        lesion = g_lab[roi_box] == k
        roi = ndimage.binary_dilation(lesion, DILATION_STRUCTURE, iterations=iterations)
        ids = np.unique(p_lab[roi_box][roi])
        ids = ids[ids > 0]
        matched.update(ids.tolist())
        if lesion.sum() * voxel_mm3 <= min_mm3:
            n_ignored += 1
        elif len(ids) == 0:
            n_fn += 1
            scores.append((0.0, LESION_HD95_PENALTY))
        else:
            n_tp += 1
            scores.append(_matched_scores(p_lab, p_boxes, ids, g_lab, k, box, spacing))
    n_fp = n_pred - len(matched)
    n = len(scores) + n_fp
    return {
        "lesion_dice": sum(d for d, _ in scores) / n if n else 1.0,
        "lesion_hd95": (sum(h for _, h in scores) + n_fp * LESION_HD95_PENALTY) / n if n else 0.0,
        "n_gt_lesions": len(scores),
        "n_tp": n_tp,
        "n_fn": n_fn,
        "n_fp": n_fp,
        "n_gt_ignored": n_ignored,
    }


def lesion_wise_dice_hd95(
    pred, gt, spacing=None, *, dilation_iterations: int = DILATION_ITERATIONS, min_lesion_mm3: float = MIN_LESION_MM3
) -> dict:
    """BraTS 2023 lesion-wise Dice and HD95 of one case (rules and source: the module docstring).

    ``pred``, ``gt``: bool-like (H, W, D) volumes of one shape; ``spacing``: 3 voxel sizes in mm (None = 1 mm).
    Returns ``{"lesion_dice": [0, 1], "lesion_hd95": mm in [0, 374], "n_gt_lesions": GT lesions scored
    (above the threshold), "n_tp", "n_fn": of those, matched / missed, "n_fp": unmatched predicted
    components, "n_gt_ignored": GT lesions at or below ``min_lesion_mm3``}``.
    """
    p, g, spacing = _volumes(pred, gt, spacing, margin=dilation_iterations)
    p_lab, n_pred = _components(p)
    return _lesion_wise(p_lab, n_pred, g, spacing, dilation_iterations, min_lesion_mm3)


def _fp_ml(p_lab, n_pred, g, spacing) -> float:
    if not n_pred:
        return 0.0
    touching = np.unique(p_lab[g])
    sizes = np.bincount(p_lab.ravel(), minlength=n_pred + 1)
    sizes[0] = 0
    sizes[touching] = 0
    return float(sizes.sum() * np.prod(spacing) / 1000.0)


def false_positive_volume_ml(pred, gt, spacing=None) -> float:
    """mL of the predicted 26-connected components that share no voxel with ``gt`` (bool-like (H, W, D))."""
    p, g, spacing = _volumes(pred, gt, spacing)
    return _fp_ml(*_components(p), g, spacing)


def normalized_surface_dice(
    pred, gt, spacing=None, tolerance_mm: float = NSD_TOLERANCE_MM, convention: str = "surfel"
) -> float:
    """Normalised surface Dice in [0, 1] at ``tolerance_mm``: ``convention`` "surfel" (MedSAM's, DeepMind's
    surfel areas; the default) or "voxel" (boundary voxels, each counting 1); module docstring.

    ``pred``, ``gt``: bool-like arrays of one shape (2-D or 3-D); ``spacing``: mm per voxel (None = 1 mm).
    1 when both masks are empty, 0 when exactly one is.
    """
    p, g = as_pair(pred, gt)
    spacing = as_spacing(spacing, p.ndim)
    if not tolerance_mm >= 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    if convention not in ("surfel", "voxel"):
        raise ValueError(f"convention must be 'surfel' (MedSAM's) or 'voxel', got {convention!r}")
    if p.ndim not in (2, 3):
        raise ValueError(f"normalized_surface_dice takes 2-D or 3-D masks, got shape {p.shape}")
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    if convention == "voxel":
        return nsd_from(*surface_distances(p, g, spacing), tolerance_mm)
    return surface_dice_at(p, g, spacing, tolerance_mm)


def volume_metrics(pred, gt, spacing=None) -> dict:
    """Per-patient columns beside ``metrics.all_metrics``: the lesion-wise scores and counts, NSD at 2 mm and the
    false-positive volume, for one (H, W, D) volume (the prediction's components are found once)."""
    p, g, spacing = _volumes(pred, gt, spacing)
    p_lab, n_pred = _components(p)
    nsd = normalized_surface_dice(p, g, spacing)  # MedSAM's surfel convention: its own distances
    return {
        **_lesion_wise(p_lab, n_pred, g, spacing, DILATION_ITERATIONS, MIN_LESION_MM3),
        NSD_COLUMN: nsd,
        "fp_ml": _fp_ml(p_lab, n_pred, g, spacing),
    }
