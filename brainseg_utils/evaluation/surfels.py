"""Surfel-area-weighted surface distances: the convention of DeepMind's ``surface-distance`` package, which
MedSAM's evaluation (``evaluation/compute_metrics.py`` of bowang-lab/MedSAM) uses for its normalised surface
Dice (``compute_surface_dice_at_tolerance``).

The surface lives on the voxel-corner grid: every 2 x 2 x 2 block of voxels (2 x 2 in 2-D) whose voxels are
neither all inside nor all outside the mask is a surface element, its position the block's corner voxel and
its weight the area of the marching-cubes surface through the block (in 2-D: the contour length, straight
edge = spacing, diagonal = half the pixel diagonal, twice for a saddle). Areas per block code come from
MONAI's table of marching-cubes normals (``monai.metrics.utils.create_table_neighbour_code_to_surface_area``,
adapted from DeepMind's); distances are Euclidean in mm between element positions. Tested against MONAI's
``compute_surface_dice(use_subvoxels=True)``, which matches DeepMind's code to 3e-8 (measured on 12 random
blob pairs, isotropic and 0.9 x 1.1 x 2 mm).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

# the 2 x 2 (x 2) block's code: bit weights of its voxels, as DeepMind's neighbour code
_KERNEL = {
    2: np.array([[8, 4], [2, 1]]),
    3: np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]]),
}


@lru_cache(maxsize=32)
def code_measure(spacing: tuple[float, ...]) -> np.ndarray:
    """Surface area (3-D, mm²) or contour length (2-D, mm) of the surface through a block, per block code."""
    if len(spacing) == 2:
        first, second = spacing
        diag = 0.5 * float(np.hypot(first, second))
        out = np.full(16, diag)  # one corner in or out: a diagonal cut
        out[[0b0000, 0b1111]] = 0.0
        out[[0b0011, 0b1100]] = second  # an edge along the second axis
        out[[0b0101, 0b1010]] = first  # an edge along the first axis
        out[[0b0110, 0b1001]] = 2 * diag  # a saddle: two diagonal cuts
        return out
    from monai.metrics.utils import create_table_neighbour_code_to_surface_area

    table, _ = create_table_neighbour_code_to_surface_area(tuple(float(s) for s in spacing))
    return table.double().cpu().numpy()


def _surfels(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(bool map of surface elements, their areas) of a mask already cropped and padded by one at the end."""
    code = ndimage.correlate(mask.astype(np.uint8), _KERNEL[mask.ndim], mode="constant", cval=0)
    full = 255 if mask.ndim == 3 else 15
    border = (code != 0) & (code != full)
    return border, code_measure(spacing)[code[border]]


def surfel_distances(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Distances (mm) from each surface element of ``p`` to ``g``'s surface and back, with their areas:
    ``{"d_pg", "d_gp", "area_p", "area_g"}``. ``p``, ``g``: bool arrays of one shape (2-D or 3-D), both
    non-empty. Both are cropped to their joint bounding box, padded by one voxel at the high end (the block at
    a mask's last voxel reaches one past it)."""
    idx = np.argwhere(p | g)
    lo, hi = idx.min(0), idx.max(0) + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pad = [(0, 1)] * p.ndim
    cp, cg = np.pad(p[crop], pad), np.pad(g[crop], pad)
    bp, area_p = _surfels(cp, spacing)
    bg, area_g = _surfels(cg, spacing)
    d_pg = ndimage.distance_transform_edt(~bg, sampling=spacing)[bp] if bg.any() else np.full(area_p.shape, np.inf)
    d_gp = ndimage.distance_transform_edt(~bp, sampling=spacing)[bg] if bp.any() else np.full(area_g.shape, np.inf)
    return {"d_pg": d_pg, "d_gp": d_gp, "area_p": area_p, "area_g": area_g}


def surface_dice_at(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float) -> float:
    """Share of both surfaces' area within ``tolerance_mm`` (<=) of the other surface (both masks non-empty)."""
    s = surfel_distances(p, g, spacing)
    total = s["area_p"].sum() + s["area_g"].sum()
    if total == 0:
        return 0.0
    near = s["area_p"][s["d_pg"] <= tolerance_mm].sum() + s["area_g"][s["d_gp"] <= tolerance_mm].sum()
    return float(near / total)
