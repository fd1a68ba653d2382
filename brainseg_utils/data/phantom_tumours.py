"""Tumours of one synthetic case, across the range BraTS 2020 holds.

Per case a grade (high grade 70 %: enhancing rim (4) around a necrotic core (1), or a solid enhancing
core when small; low grade: a non-enhancing core (1) only) and 1-3 foci (multifocal in 28 % of cases,
satellites 25-70 % of the main radius). The main core radius is log-normal around 12.5 mm (sigma 0.45,
3-28 mm): whole tumours of median ~50 mL (10 % below ~12 mL, a few of 2 mL; 24 cases at depth 155), so small
tumours occur but, as in BraTS's pre-operative gliomas, most whole tumours measure tens of mL or more. Version 3
(around 10 mm, 3-26) drew a median of 33 mL with 17 % of cases below 8 mL.

Each focus sits in the cerebral hemispheres, the temporal lobes included, from the skull base to near the
vertex: deep in white matter (70 %) or in the cortex, 2-8 mm below the surface (30 %).

Edema (2) is a lobulated ball 1.2-2.4x the core (high grade) or 1.0-1.5x (low grade) that spreads in white
matter and spares most of the cortex (grey matter only in its inner part). It is INFILTRATIVE: each edema
voxel carries a strength in [0, 1], 1 well inside and 0 at the labelled margin, and the renderer fades
edema brightness towards the surrounding tissue with it, so the outer labelled edema is only a little
brighter than normal white matter, as on real FLAIR.
"""

from __future__ import annotations

import numpy as np

from brainseg_utils.data.phantom_anatomy import BG, CEREBRAL, ED, ET, GM, NCR, PARTS, PVH, WM, Anatomy
from brainseg_utils.data.phantom_fields import lobulated_distance, smooth_noise

HIGH_GRADE_SHARE = 0.7
FOCI = ([1, 2, 3], [0.72, 0.2, 0.08])
CORTICAL_SHARE = 0.3
MAIN_RADIUS_MM = (12.5, 0.45, 3.0, 28.0)  # log-normal median, sigma; clipped to (min, max)
EDEMA_FADE = 0.6  # edema strength reaches 1 this far inside its margin (fraction of the edema radius)


def _centre(rng, anat: Anatomy, radius: float, cortical: bool) -> np.ndarray:
    """A voxel of cerebral grey/white matter between 24 % and 88 % of the brain height, at the wanted depth."""
    lattice = (slice(None, None, 2),) * 3
    tissue, depth_mm, part = anat.tissue[lattice], anat.depth_mm[lattice], anat.part[lattice]
    z = np.arange(anat.tissue.shape[2], dtype=np.float32)[::2]
    u = (z - anat.height[0]) / (anat.height[1] - anat.height[0])
    names = list(PARTS)
    ok = np.isin(part, [names.index(n) for n in CEREBRAL]) & np.isin(tissue, [GM, WM, PVH])
    ok &= ((u > 0.24) & (u < 0.88))[None, None, :]
    at_depth = ok & ((depth_mm > 2) & (depth_mm < 8) if cortical else depth_mm > max(10.0, 0.6 * radius))
    cand = np.argwhere(at_depth if at_depth.any() else ok)
    return (cand[rng.integers(len(cand))] * 2 + rng.integers(0, 2, 3)).astype(np.float32)


def _focus(rng, anat: Anatomy, strength: np.ndarray, c: np.ndarray, radius: float, high_grade: bool) -> dict:
    """Plant one focus centred at ``c`` into ``anat.tissue`` (and the edema strength) in place."""
    tissue = anat.tissue
    edema = radius * (rng.uniform(1.2, 2.4) if high_grade else rng.uniform(1.0, 1.5)) + rng.uniform(1.0, 4.0)
    ext = int(np.ceil(edema * 1.6)) + 3
    sl = tuple(slice(max(0, int(c[k]) - ext), min(tissue.shape[k], int(c[k]) + ext + 1)) for k in range(3))
    sub, sub_strength = tissue[sl], strength[sl]
    grid = np.meshgrid(*(np.arange(s.start, s.stop, dtype=np.float32) for s in sl), indexing="ij")
    dist = np.sqrt(sum((g - c[k]) ** 2 for k, g in enumerate(grid)))
    core = lobulated_distance(dist, radius, smooth_noise(rng, sub.shape, max(2.0, radius / 3), 1), 0.25)
    swell = lobulated_distance(dist, edema, smooth_noise(rng, sub.shape, max(2.0, edema / 4), 1), 0.4)
    names = list(PARTS)
    supratentorial = np.isin(anat.part[sl], [names.index(n) for n in CEREBRAL])  # the tentorium stops it
    in_core = (core < 1.0) & supratentorial & (sub > BG) & (sub != ED) & (sub != NCR) & (sub != ET)
    spreads = supratentorial & (np.isin(sub, [WM, PVH]) | ((sub == GM) & (swell < 0.75)) | (sub == ED))
    in_edema = (swell < 1.0) & spreads & ~in_core
    sub[in_edema] = ED
    fade = np.clip((1.0 - swell) / EDEMA_FADE, 0.0, 1.0)
    np.maximum(sub_strength, np.where(in_edema, fade, 0.0).astype(np.float32), out=sub_strength)
    rim = rng.uniform(1.5, 4.5)
    necrotic = high_grade and radius > 5 and rng.random() < 0.85
    if high_grade:
        sub[in_core] = ET
        if necrotic:
            sub[in_core & ((1.0 - core) * radius > rim)] = NCR
    else:
        sub[in_core] = NCR
    sub_strength[in_core] = 0.0
    return {
        "centre": [round(float(v), 1) for v in c],
        "radius_mm": round(float(radius), 1),
        "edema_radius_mm": round(float(edema), 1),
        "necrotic": bool(necrotic),
        "rim_mm": round(float(rim), 1) if high_grade else None,
    }


def plant_tumours(rng: np.random.Generator, anat: Anatomy) -> tuple[list[dict], bool, np.ndarray]:
    """Plant the case's tumours into ``anat.tissue`` in place.

    Returns (descriptions, high_grade, edema strength float32 volume: 1 deep in edema, 0 at its margin and
    outside edema)."""
    strength = np.zeros(anat.tissue.shape, np.float32)
    high_grade = bool(rng.random() < HIGH_GRADE_SHARE)
    n = int(rng.choice(FOCI[0], p=FOCI[1]))
    main = float(np.clip(rng.lognormal(np.log(MAIN_RADIUS_MM[0]), MAIN_RADIUS_MM[1]), *MAIN_RADIUS_MM[2:]))
    planted = []
    for k in range(n):
        radius = main if k == 0 else max(2.5, main * rng.uniform(0.25, 0.7))
        cortical = bool(rng.random() < CORTICAL_SHARE)
        c = _centre(rng, anat, radius, cortical)
        planted.append({**_focus(rng, anat, strength, c, radius, high_grade), "cortical": cortical})
    return planted, high_grade, strength
