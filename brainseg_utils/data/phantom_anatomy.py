"""Normal anatomy of one synthetic brain, from the skull base to the vertex.

The brain is a union of deformed ellipsoidal parts, each owning the voxels where its normalised radius
is smallest: the cerebrum, two temporal lobes and the orbitofrontal base that hang below it, two
cerebellar hemispheres behind the brainstem, and the brainstem with the pons. Where two parts that are
separate in a real brain meet (temporal lobe and frontal base, cerebellum and cerebrum: the Sylvian
fissure and the tentorium), a CSF gap divides them, so the inferior slices hold the separate islands of
brain a real scan has there; the interhemispheric fissure splits the superior slices into two hemispheres.

Inside: a cortical ribbon of grey matter (thickness and fold depth per case) with CSF in its sulci and
over the surface (wider with "atrophy"), white matter beneath; cerebellar folia (grey matter with thin
CSF clefts around a white-matter core); deep grey nuclei (thalamus, lentiform nucleus); the lateral
ventricles (curved, horns diverging), third and fourth ventricles; and the normal FLAIR
hyperintensities that are not tumour: periventricular caps at the horns, a thin periventricular rim and,
in some cases, punctate white-matter hyperintensities (class PVH).

``depth_mm`` approximates each voxel's distance below the brain surface (or a fissure) in mm; tumours
use it to sit in the cortex or deep in white matter. Array axes as BraTS: x left-right, y with small
indices anterior, z from inferior to superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainseg_utils.data.phantom_fields import smooth_noise

SHAPE_XY = (240, 240)
# Tissue classes of the hidden "anatomy" volume (PVH: normal FLAIR hyperintensity, label 0).
BG, CSF, GM, WM, ED, NCR, ET, PVH = range(8)
# Parts: name -> (kind, offsets of the centre (x, y: mm times the case's scale; z: fraction of the brain
# height), radii (x, y: mm times scale; z: fraction of the height)). Sides are mirrored in x.
CEREBRAL = ("cerebrum", "temporal_l", "temporal_r", "frontal_base")
PARTS = {
    "cerebrum": ((0, 0, 0.66), (68, 86, 0.34)),
    "temporal_l": ((-44, -8, 0.34), (22, 40, 0.14)),
    "temporal_r": ((44, -8, 0.34), (22, 40, 0.14)),
    "frontal_base": ((0, -52, 0.37), (34, 28, 0.09)),
    "cerebellum_l": ((-24, 50, 0.19), (30, 28, 0.15)),
    "cerebellum_r": ((24, 50, 0.19), (30, 28, 0.15)),
    "brainstem": ((0, 18, 0.24), (12, 12, 0.23)),
    "pons": ((0, 14, 0.27), (16, 14, 0.08)),
}
# Pairs of parts separated by a CSF gap where they meet (index pairs into PARTS' order).
_NAMES = list(PARTS)
_SEPARATE = {
    frozenset(p)
    for p in [
        ("temporal_l", "frontal_base"),
        ("temporal_r", "frontal_base"),
        ("temporal_l", "cerebellum_l"),
        ("temporal_r", "cerebellum_r"),
        ("cerebrum", "cerebellum_l"),
        ("cerebrum", "cerebellum_r"),
        ("temporal_l", "brainstem"),
        ("temporal_r", "brainstem"),
        ("temporal_l", "pons"),
        ("temporal_r", "pons"),
        ("cerebellum_l", "brainstem"),
        ("cerebellum_r", "brainstem"),
        ("cerebellum_l", "pons"),
        ("cerebellum_r", "pons"),
    ]
}


@dataclass
class Anatomy:
    tissue: np.ndarray  # uint8 (240, 240, depth), classes above
    depth_mm: np.ndarray  # float32: approximate distance below the brain surface or a fissure, mm
    part: np.ndarray  # uint8: index into PARTS of the owning part, 255 outside the brain
    height: tuple[float, float]  # first and last brain slice (float)
    meta: dict


class _Grid:
    """In-plane coordinates rotated by the case's yaw about its centre, and the slice axis."""

    def __init__(self, depth: int, centre_xy: tuple[float, float], yaw: float):
        x, y = np.meshgrid(np.arange(240, dtype=np.float32), np.arange(240, dtype=np.float32), indexing="ij")
        c, s = np.cos(yaw), np.sin(yaw)
        dx, dy = x - centre_xy[0], y - centre_xy[1]
        self.x = c * dx - s * dy  # offsets from the centre along the head's own axes
        self.y = s * dx + c * dy
        self.z = np.arange(depth, dtype=np.float32)

    def r(self, centre, radii) -> np.ndarray:
        """Normalised ellipsoid radius (< 1 inside), centre in head offsets (x, y) and slices (z)."""
        inplane = ((self.x - centre[0]) / radii[0]) ** 2 + ((self.y - centre[1]) / radii[1]) ** 2
        along = ((self.z - centre[2]) / radii[2]) ** 2
        return np.sqrt(inplane[:, :, None] + along[None, None, :])


def _parts(rng, grid: _Grid, z0: float, height: float, scale: float, warp: np.ndarray):
    """Owner (part index), smallest and second-smallest normalised radius, and the runner-up's index."""
    shape = (240, 240, len(grid.z))
    r1 = np.full(shape, np.inf, np.float32)
    r2 = np.full(shape, np.inf, np.float32)
    p1 = np.full(shape, 255, np.uint8)
    p2 = np.full(shape, 255, np.uint8)
    radius_mm = np.zeros(len(PARTS) + 1, np.float32)
    centres = np.zeros((len(PARTS) + 1, 3), np.float32)
    for k, (offset, radii) in enumerate(PARTS.values()):
        jitter = rng.uniform(0.92, 1.08, 3)
        centre = (offset[0] * scale, offset[1] * scale, z0 + offset[2] * height)
        rad = (radii[0] * scale * jitter[0], radii[1] * scale * jitter[1], radii[2] * height * jitter[2])
        r = grid.r(centre, rad) * warp
        radius_mm[k] = min(rad[0], rad[1])
        centres[k] = centre
        better = r < r1
        second = ~better & (r < r2)
        r2 = np.where(better, r1, np.where(second, r, r2))
        p2 = np.where(better, p1, np.where(second, np.uint8(k), p2))
        r1 = np.where(better, r, r1)
        p1 = np.where(better, np.uint8(k), p1)
    return r1, p1, r2, p2, radius_mm, centres


def _fissure_depth(r1, p1, r2, p2, radius_mm) -> np.ndarray:
    """Distance (mm) to the boundary of the owning part: its surface, or a fissure with a separate part."""
    depth = (1.0 - r1) * radius_mm[np.minimum(p1, len(PARTS))]
    separate = np.zeros((256, 256), bool)
    for pair in _SEPARATE:
        a, b = (_NAMES.index(n) for n in pair)
        separate[a, b] = separate[b, a] = True
    gap = separate[p1, p2] & (r2 < 1.0)
    half = 0.5 * (r2 - r1) * radius_mm[np.minimum(p1, len(PARTS))]
    return np.where(gap, np.minimum(depth, half), depth)


def anatomy(rng: np.random.Generator, depth: int) -> Anatomy:
    """Draw one brain: tissue classes, depth below the surface and owning part per voxel."""
    shape = (*SHAPE_XY, depth)
    z0 = depth * rng.uniform(0.01, 0.05)
    height = depth * rng.uniform(0.92, 0.97) - z0
    scale = rng.uniform(0.95, 1.1)
    grid = _Grid(depth, (120 + rng.uniform(-6, 6), 120 + rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-8, 8)))
    warp = 1.0 + 0.06 * smooth_noise(rng, shape, 30, 8)  # per-case shape deformation
    r1, p1, r2, p2, radius_mm, centres = _parts(rng, grid, z0, height, scale, warp)
    brain = r1 < 1.0
    depth_mm = _fissure_depth(r1, p1, r2, p2, radius_mm)
    del r2, p2
    u = ((grid.z - z0) / height)[None, None, :]
    # interhemispheric fissure: above the corpus callosum everywhere, lower in front of and behind it
    fissure = np.abs(grid.x)[:, :, None] - rng.uniform(0.4, 1.0)
    midline = np.isin(p1, [0, 3]) & ((u > 0.64) | ((np.abs(grid.y)[:, :, None] > 42 * scale) & (u > 0.4)))
    depth_mm = np.where(midline, np.minimum(depth_mm, fissure), depth_mm)
    atrophy = float(rng.uniform(0, 1))
    tissue = np.zeros(shape, np.uint8)
    tissue[brain] = WM
    _cortex(rng, tissue, depth_mm, p1, r1, atrophy, _gyral_field(rng, grid, p1, r1, centres))
    meta = {"scale": round(float(scale), 3), "atrophy": round(atrophy, 3)}
    meta.update(_deep_structures(rng, tissue, grid, z0, height, scale, atrophy, brain))
    tissue[~brain] = BG
    depth_mm = np.where(brain, np.maximum(depth_mm, 0.0), 0.0).astype(np.float32)
    return Anatomy(tissue, depth_mm, np.where(brain, p1, np.uint8(255)), (z0, z0 + height), meta)


def _gyral_field(rng, grid: _Grid, part, r, centres) -> np.ndarray:
    """Smooth noise that is constant along the rays from each part's centre (sampled at the point where the
    ray leaves the part): its level sets are sheets that run into the brain at right angles to the surface,
    like sulci. Zero crossings ~10-12 mm apart at the surface."""
    shape = part.shape
    noise = smooth_noise(rng, shape, 4, 2)
    c = centres[np.minimum(part, len(centres) - 1)]  # (H, W, D, 3) owning part's centre (outside: unused)
    inv = 1.0 / np.maximum(r, 0.3)
    coords = [
        (c[..., 0] + (grid.x[:, :, None] - c[..., 0]) * inv) + 120.0,
        (c[..., 1] + (grid.y[:, :, None] - c[..., 1]) * inv) + 120.0,
        c[..., 2] + (grid.z[None, None, :] - c[..., 2]) * inv,
    ]
    radial = ndimage.map_coordinates(noise, coords, order=1, mode="nearest").astype(np.float32)
    return radial + 0.35 * smooth_noise(rng, shape, 3, 1)  # sulci bend and branch


def _cortex(rng, tissue, depth_mm, part, r, atrophy: float, gyral: np.ndarray) -> None:
    """Cortical ribbon, gyri and sulci in the cerebral parts; folia in the cerebellum; CSF over the surface.

    Sulci: where the gyral field is near zero, down to a depth that varies along the surface; the cortex lines
    the surface and both banks of every sulcus (a band of the field around zero), leaving white-matter cores in
    the gyri."""
    brain = tissue > BG
    cerebral = np.isin(part, [_NAMES.index(n) for n in CEREBRAL]) & brain
    surface_csf = 0.6 + 1.4 * atrophy
    ribbon = surface_csf + rng.uniform(2.5, 3.5)
    sulcal_depth = rng.uniform(14, 22) * (1.0 + 0.25 * np.clip(smooth_noise(rng, tissue.shape, 12, 8), -2, 2))
    in_sulcus = np.abs(gyral) < 0.07 + 0.08 * atrophy
    banks = np.abs(gyral) < rng.uniform(0.7, 0.9)
    tissue[cerebral & ((depth_mm < ribbon) | (banks & (depth_mm < sulcal_depth + 2.5)))] = GM
    tissue[cerebral & in_sulcus & (depth_mm < sulcal_depth)] = CSF
    cereb = np.isin(part, [_NAMES.index("cerebellum_l"), _NAMES.index("cerebellum_r")]) & brain
    tissue[cereb & (r > 0.5)] = GM
    folia = np.cos(2 * np.pi * ((1.0 - r) * 28.0 / rng.uniform(4.0, 6.0) + 0.4 * gyral))
    tissue[cereb & (r > 0.55) & (folia > 0.9 - 0.1 * atrophy)] = CSF
    tissue[brain & (depth_mm < surface_csf)] = CSF


def _deep_structures(rng, tissue, grid: _Grid, z0, height, scale, atrophy, brain) -> dict:
    """Deep grey nuclei, ventricles, periventricular hyperintensities and white-matter spots."""
    zc = z0 + 0.52 * height
    for side in (-1, 1):  # thalamus and lentiform nucleus
        for off, rad in (((12, 12), (9, 14)), ((24, -2), (7, 16))):
            r = grid.r((side * off[0] * scale, off[1] * scale, zc), (rad[0] * scale, rad[1] * scale, 0.06 * height))
            tissue[brain & (r < 1.0)] = GM
    vy = -rng.uniform(2, 10) * scale
    vz, vrz = z0 + 0.58 * height, 0.08 * height * rng.uniform(0.9, 1.2)
    vry = rng.uniform(24, 32) * scale
    vrx = rng.uniform(3.0, 5.5) * (1.0 + 0.6 * atrophy)
    caps = rng.random() < 0.8
    cap_ext = rng.uniform(0.12, 0.4)
    vent = np.zeros(tissue.shape, bool)
    halo = np.zeros(tissue.shape, bool)
    for side in (-1, 1):
        yn = (grid.y - vy) / vry
        xc = side * (rng.uniform(7, 11) + 8.0 * yn**2)  # horns diverge laterally at both ends
        inplane = ((grid.x - xc) / vrx) ** 2 + yn**2
        rv = np.sqrt(inplane[:, :, None] + (((grid.z - vz) / vrz) ** 2)[None, None, :])
        vent |= rv < 1.0
        halo |= rv < 1.07
        if caps:
            halo |= (rv < 1.0 + cap_ext) & (np.abs(yn) > 0.6)[:, :, None]
    tissue[brain & halo & (tissue == WM)] = PVH
    for centre, rad in (
        ((0, 2 * scale, z0 + 0.47 * height), (1.2 + atrophy, 11 * scale, 0.06 * height)),  # third ventricle
        ((0, 30 * scale, z0 + 0.22 * height), (5 * scale, 3 * scale, 0.06 * height)),  # fourth ventricle
    ):
        vent |= grid.r(centre, rad) < 1.0
    tissue[brain & vent] = CSF
    n_spots = int(rng.poisson(6 * atrophy)) if rng.random() < 0.5 else 0
    deep = np.argwhere((tissue == WM) & (np.abs(grid.x)[:, :, None] > 15)) if n_spots else np.zeros((0, 3))
    for _ in range(n_spots if len(deep) else 0):
        c = deep[rng.integers(len(deep))]
        rad = rng.uniform(1.0, 3.5)
        sl = tuple(slice(max(0, int(v) - 4), int(v) + 5) for v in c)
        axes = (np.arange(s.start, min(s.stop, n)) for s, n in zip(sl, tissue.shape, strict=True))
        g = np.meshgrid(*axes, indexing="ij")
        spot = sum((gi - ci) ** 2 for gi, ci in zip(g, c, strict=True)) < rad**2
        sub = tissue[sl]
        sub[spot & (sub == WM)] = PVH
    return {"ventricle_caps": bool(caps), "white_matter_spots": n_spots}
