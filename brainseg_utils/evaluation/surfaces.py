"""Surface voxels and surface-to-surface distances: what HD95 (``metrics.hd95``), the lesion-wise HD95 and
the normalised surface Dice (``lesionwise.normalized_surface_dice``) share.

Convention (MONAI's ``get_mask_edges`` / ``get_surface_distance``): a mask's surface is its voxels with at
least one face-neighbour outside the mask (the image border counts as outside); each surface voxel is one
point at its centre, weight 1 (not weighted by area); distances are Euclidean in mm between voxel centres,
spacing-aware.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def as_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as bool arrays of one shape; ValueError naming both shapes otherwise."""
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    return p, g


def as_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """``spacing`` (mm per voxel along each axis; None = 1 mm) as floats, one per axis."""
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * ndim))
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {ndim}-D mask")
    if min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must be positive (mm per voxel)")
    return spacing


def surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face-neighbour outside the mask (the image border counts as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def surface_distances(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(distance in mm from each surface voxel of ``p`` to ``g``'s surface, and from each of ``g``'s to ``p``'s).

    ``p``, ``g``: bool arrays of one shape, both non-empty. Both masks are cropped to their joint bounding box
    (+1 voxel) first: every surface voxel lies inside it, so the distances are unchanged.
    """
    idx = np.argwhere(p | g)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = idx.max(0) + 2
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sp, sg = surface(p[crop]), surface(g[crop])
    d_pg = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    d_gp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    return d_pg, d_gp


def hd95_from(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    """The larger of the two directed 95th-percentile surface distances (mm), from ``surface_distances``."""
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def hd95_of(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 in mm of two non-empty bool masks (``hd95_from`` of their ``surface_distances``)."""
    return hd95_from(*surface_distances(p, g, spacing))


def nsd_from(d_pg: np.ndarray, d_gp: np.ndarray, tolerance_mm: float) -> float:
    """Share of both surfaces' voxels within ``tolerance_mm`` (<=) of the other surface, from ``surface_distances``."""
    return float(((d_pg <= tolerance_mm).sum() + (d_gp <= tolerance_mm).sum()) / (d_pg.size + d_gp.size))
