"""Real-anatomy benchmark, third construction ("mni_growth"): tumours GROWN by reaction-diffusion on MNI152 tissue.

A benchmark, not training data. Shares no code with the synthetic generator (``brainseg_utils.data``) nor the
other constructions (``realanatomy.py``, ``realanatomy_flair.py``); its own models:

* Deformation: random affine (rotation <= 8 deg per axis, per-axis scale, shear <= 4 %) + a POLYNOMIAL warp
  (degree 2-3 monomials, a few mm); the whole brain (cerebellum, temporal lobes, vertex) fitted into 155 slices.
* Tumour: Fisher-Kolmogorov reaction-diffusion du/dt = div(D grad u) + rho u (1 - u) [Swanson 2000; Clatz 2005;
  Konukoglu 2010], D(WM) = 5-10 x D(GM), 0 in CSF / outside (harmonic face means: no flux), explicit steps on a
  crop around the seed (1 mm; 2 mm when large) until the visible volume is reached. Labels from the density:
  edema u > 0.06-0.2, core u > 0.5-0.75 (4 high grade, 1 low grade), necrosis 1 where u stayed saturated
  longest. Images follow u smoothly. Seeds in deep WM, cortex or the lower brain (temporal lobes); 20 % two foci.
* Contrast: per-tissue two-component Gaussian mixtures (coherent component field, voxel texture), per-case FLAIR
  means (CSF 0.05-0.3 x WM, GM 1.05-1.3 x WM or, in 35 % of cases, cortex DARKER than WM via CSF partial volume).
* Acquisition: THICK axial slices (3-5 mm slabs, 0-1 mm gap, averaged along z, linearly resampled to 1 mm; FLAIR
  and T2 mostly, T1 sometimes, T1ce rarely: many BraTS scans were 2D [Menze 2015; Bakas 2017]), exp-polynomial
  bias, sum-of-squares magnitude noise over 1-3 coils (noncentral chi) [Constantinides 1997].

References: Fonov, NeuroImage 2011;54:313. Swanson, Cell Prolif 2000;33:317. Clatz, IEEE TMI 2005;24:1334.
Konukoglu, IEEE TMI 2010;29:77. Menze, IEEE TMI 2015;34:1993. Bakas, Sci Data 2017;4:170117. Constantinides, MRM
1997;38:852 (ranges: this benchmark's choices within them). BraTS 2020 layout + ``REALANATOMY_GROWTH.json`` (config,
template sha256s, per-case draws, ``flair_overlap``: share of normal brain brighter on FLAIR than the median
edema voxel), written last, reused when the parameters match.

    python benchmarks/realanatomy_growth.py --out outputs/benchmarks/sets/mni_growth --cases 12
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainseg_utils.runtime.io import atomic_write_json, file_sha256

MARKER = "REALANATOMY_GROWTH.json"
VERSION = 1
SHAPE = (240, 240, 155)
MODALITIES = ("flair", "t1", "t1ce", "t2")
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # BraTS files
TEMPLATE = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
LAT = 4  # mm between the nodes on which the warp and the bias field are evaluated
SAT = 0.9  # density counted as saturated


def nilearn_data() -> Path:
    try:
        import nilearn
    except ImportError as exc:
        raise ImportError("realanatomy_growth reads the MNI152 template of nilearn: pip install nilearn") from exc
    d = Path(nilearn.__file__).parent / "datasets" / "data"
    if absent := [f for f in TEMPLATE.values() if not (d / f).is_file()]:
        raise FileNotFoundError(f"nilearn {nilearn.__version__} at {d} lacks {absent}")
    return d


def load_tissue() -> dict:
    """Template-space maps (197, 233, 189): gm, wm, csf, brain, cortex (GM next to CSF); centre, surface points."""
    d = nilearn_data()
    m = {k: np.asarray(nib.load(d / f).dataobj, np.float32) / 255.0 for k, f in TEMPLATE.items()}
    brain = ndimage.binary_fill_holes(m.pop("t1") > 0.03)
    m["csf"] = (np.clip(1 - m["gm"] - m["wm"], 0, 1) * brain).astype(np.float32)
    m["cortex"] = (m["gm"] * np.clip(ndimage.gaussian_filter(m["csf"], 1.5) / 0.25, 0, 1)).astype(np.float32)
    m["brain"] = brain.astype(np.float32)
    edge = brain & ~ndimage.binary_erosion(brain, iterations=2)
    return {**m, "centre": np.argwhere(brain).mean(0), "surface": np.argwhere(edge)[::11].astype(np.float64)}


def draw_affine(rng: np.random.Generator, tissue: dict) -> dict:
    """Backward affine x -> c_t + A (x - c_o), scaled so the brain fits the 155 slices with 5 to spare."""
    a = np.deg2rad(rng.uniform(-8, 8, 3))
    rot = Rotation.from_euler("xyz", a).as_matrix()
    shear = np.eye(3) + np.triu(rng.uniform(-0.04, 0.04, (3, 3)), 1)
    size = rng.uniform(0.9, 1.05) * rng.uniform(0.96, 1.04, 3)
    fwd = np.diag(size) @ shear @ rot.T @ np.diag([-1.0, -1.0, 1.0])  # template offset -> output offset
    rel = (tissue["surface"] - tissue["centre"]) @ fwd.T
    fit = min(1.0, (SHAPE[2] - 15) / np.ptp(rel[:, 2]))
    fwd *= fit
    rel *= fit
    c_o = (np.array(SHAPE) - 1) / 2 - (rel.min(0) + rel.max(0)) / 2 + [rng.uniform(-5, 5), rng.uniform(-5, 5), 0]
    return {"A": np.linalg.inv(fwd), "c_o": c_o, "c_t": tissue["centre"], "angles_deg": np.rad2deg(a).round(2).tolist()}


def monomials(xi: np.ndarray) -> list[np.ndarray]:
    """Degree-2 and degree-3 monomials of the 3 normalised coordinates (16 terms)."""
    x, y, z = xi
    two = [x * x, y * y, z * z, x * y, x * z, y * z]
    return two + [x * t for t in two] + [y * y * y, y * y * z, y * z * z, z * z * z]


def backward_map(rng: np.random.Generator, aff: dict) -> np.ndarray:
    """Template voxel coordinates (3, 61, 61, 40) at the lattice nodes: affine + polynomial warp."""
    n = [s // LAT + 2 for s in SHAPE]
    nodes = np.stack(np.meshgrid(*(LAT * np.arange(k, dtype=np.float64) for k in n), indexing="ij"))
    off = nodes - aff["c_o"][:, None, None, None]
    terms = monomials(off / 80.0)
    coef = rng.normal(0, rng.uniform(1.0, 2.5), (3, len(terms)))  # mm per term
    warp = np.stack([sum(c * t for c, t in zip(row, terms, strict=True)) for row in coef])
    return np.einsum("ij,jxyz->ixyz", aff["A"], off + np.clip(warp, -5, 5)) + aff["c_t"][:, None, None, None]


def on_grid(lattice_field: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """A lattice field (..., nx, ny, nz) trilinearly interpolated at the 1 mm voxels of ``box``."""
    shape = [b.stop - b.start for b in box]
    return ndimage.affine_transform(lattice_field, [1 / LAT] * 3, [b.start / LAT for b in box], shape, order=1)


def face_diffusivity(d: np.ndarray) -> list[np.ndarray]:
    """Harmonic mean of D across each face along x, y, z: 0 when either side is 0 (no flux into CSF)."""
    out = []
    for ax in range(3):
        a, b = np.delete(d, -1, axis=ax), np.delete(d, 0, axis=ax)
        out.append(np.where(a + b > 0, 2 * a * b / np.maximum(a + b, 1e-12), 0).astype(np.float32))
    return out


def rd_step(u: np.ndarray, faces: list[np.ndarray], dt: float, h: float, rho: float) -> np.ndarray:
    """One explicit Euler step of du/dt = div(D grad u) + rho u (1 - u), no-flux at the array border."""
    div = np.zeros_like(u)
    for ax in range(3):
        flux = faces[ax] * np.diff(u, axis=ax) / (h * h)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        div[tuple(lo)] += flux
        div[tuple(hi)] -= flux
    return u + dt * (div + rho * u * (1 - u))


def grow(d: np.ndarray, seed, h: float, lam: float, volume_mm3: float, threshold: float, max_steps: int = 700):
    """Grow from ``seed`` (voxel) on diffusivity ``d`` (max 1, 0 = no tissue) until {u > threshold} holds
    ``volume_mm3``. Returns (density u, steps each voxel stayed saturated, steps taken)."""
    rho = 1.0 / lam**2  # D_wm = 1 mm^2 per time unit, so sqrt(D / rho) = lam mm
    dt = min(0.9 * h * h / 6, 0.3 / rho)
    faces = face_diffusivity(d)
    g = np.meshgrid(*(np.arange(n, dtype=np.float32) - s for n, s in zip(d.shape, seed, strict=True)), indexing="ij")
    u = (0.9 * np.exp(-sum(a * a for a in g) / 2.0) * (d > 0)).astype(np.float32)
    sat = np.zeros(d.shape, np.int16)
    steps = 0
    while steps < max_steps:
        u = rd_step(u, faces, dt, h, rho)
        sat += u > SAT
        steps += 1
        if steps % 5 == 0:
            edge = max(np.moveaxis(u, ax, 0)[[0, -1]].max() for ax in range(3))
            if (u > threshold).sum() * h**3 >= volume_mm3 or edge > threshold:
                break
    return np.clip(u, 0, 1), sat, steps


def tumour(w: dict, seed, t: dict) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Grow tumour ``t`` at voxel ``seed`` of the (box) tissue ``w``: (crop, density u at 1 mm, labels 0/1/2/4)."""
    h = 2 if t["radius_mm"] > 14 else 1
    half = int(t["radius_mm"] * 1.3 + 3 * t["lambda_mm"] + 6)
    ab = [(max(0, seed[k] - half), min(w["brain"].shape[k], seed[k] + half)) for k in range(3)]
    sl = tuple(slice(a, b - (b - a) % h) for a, b in ab)
    dom = (w["csf"][sl] < 0.5) & (w["brain"][sl] > 0.5)
    d = (w["wm"][sl] + w["gm"][sl] / t["wm_gm_ratio"]) * dom
    if h == 2:
        blocks = [n // 2 for n in d.shape]
        d = d.reshape(blocks[0], 2, blocks[1], 2, blocks[2], 2).mean((1, 3, 5))
        d *= dom.reshape(blocks[0], 2, blocks[1], 2, blocks[2], 2).mean((1, 3, 5)) > 0.5
    d = np.clip(d / max(float(d.max()), 1e-6), 0, 1)
    local = [(seed[k] - sl[k].start) // h for k in range(3)]
    u, sat, steps = grow(d, local, h, t["lambda_mm"], 4 / 3 * np.pi * t["radius_mm"] ** 3, t["edema_threshold"])
    t["steps"], t["grid_mm"] = int(steps), h
    if h == 2:
        shape, off = dom.shape, [-0.25] * 3  # 1 mm voxel j sits at 2 mm coordinate (j - 0.5) / 2
        u = ndimage.affine_transform(u, [0.5] * 3, off, shape, order=1, mode="nearest")
        sat = ndimage.affine_transform(sat.astype(np.float32), [0.5] * 3, off, shape, order=1, mode="nearest")
    u = (u * dom).astype(np.float32)
    lab = np.where(u > t["edema_threshold"], 2, 0).astype(np.uint8)
    core = u > t["core_threshold"]
    if t["high_grade"]:
        nec = core & (sat > 0) & (sat >= (1 - t["necrosis_fraction"]) * sat.max())  # saturated longest
        lab[core] = 4
        lab[nec] = 1
    else:
        lab[core] = 1
    return sl, u, lab


def draw_tumours(rng: np.random.Generator, w: dict) -> list[dict]:
    """1-2 seeds (deep white matter, cortex or the lower brain) and their growth parameters."""
    b2 = w["brain"][::2, ::2, ::2] > 0.5
    depth = ndimage.distance_transform_edt(b2) * 2
    tissue = b2 & (w["csf"][::2, ::2, ::2] < 0.2)
    zs = np.flatnonzero(b2.any((0, 1)))
    lower = np.zeros_like(b2)
    lower[:, :, : zs.min() + int(0.35 * np.ptp(zs))] = True
    cand = {
        "deep": tissue & (w["wm"][::2, ::2, ::2] > 0.6) & (depth > 12),
        "cortical": tissue & (w["gm"][::2, ::2, ::2] > 0.5) & (depth < 10),
        "lower": tissue & lower & (depth > 4),
    }
    out = []
    for _ in range(2 if rng.random() < 0.2 else 1):
        site = str(rng.choice(list(cand), p=[0.35, 0.3, 0.35]))
        pts = np.argwhere(cand[site])
        if not len(pts):
            continue
        out.append({
            "seed": (pts[rng.integers(len(pts))] * 2 + rng.integers(0, 2, 3)).tolist(), "site": site,
            "radius_mm": round(float(np.exp(rng.uniform(np.log(5), np.log(35)))) / (1.25 if out else 1), 1),
            "lambda_mm": round(rng.uniform(1.2, 4.0), 2), "wm_gm_ratio": round(rng.uniform(5, 10), 2),
            "edema_threshold": round(rng.uniform(0.06, 0.2), 3), "core_threshold": round(rng.uniform(0.5, 0.75), 3),
            "necrosis_fraction": round(rng.uniform(0.3, 0.6), 3), "high_grade": bool(rng.random() < 0.7),
        })  # fmt: skip
    return out


def draw_contrasts(rng: np.random.Generator) -> dict:
    """Per-case means relative to white matter (= 1); ``pv``: cortex-CSF partial volume (dark-cortex cases)."""
    u = rng.uniform
    dark = bool(rng.random() < 0.35)
    return {
        "dark_cortex": dark, "pv": u(0.3, 0.55) if dark else u(0.0, 0.1), "kappa": u(0.2, 1.0),
        "delta": {k: u(-0.1, 0.1) for k in ("wm", "gm", "csf")},
        "texture": {"wm": u(0.02, 0.05), "gm": u(0.03, 0.07), "csf": u(0.05, 0.1)},
        "flair": {"gm": u(0.95, 1.1) if dark else u(1.05, 1.3), "csf": u(0.05, 0.3), "peak": u(1.2, 1.9),
                  "nec": u(0.3, 1.0)},
        "t2": {"gm": u(1.1, 1.5), "csf": u(2.5, 4.5), "peak": u(1.6, 2.6), "nec": u(2.0, 3.5)},
        "t1": {"gm": u(0.55, 0.8), "csf": u(0.15, 0.35), "peak": u(0.7, 0.9), "nec": u(0.3, 0.5)},
        "enh": u(1.4, 2.0),
    }  # fmt: skip


def render(c: dict, mod: str, w: dict, comp, texture, u, masks) -> np.ndarray:
    """Noise-free image: Gaussian-mixture tissue x smooth function of the tumour density, then necrosis / rim."""
    m = {"wm": 1.0, **c["t1" if mod == "t1ce" else mod]}
    mu = {k: m[k] * (1 + c["delta"][k] * comp) for k in ("wm", "gm", "csf")}
    gm_eff = mu["gm"] * (1 - c["pv"] * w["cortex"]) + m["csf"] * c["pv"] * w["cortex"]
    img = w["wm"] * mu["wm"] + w["gm"] * gm_eff + w["csf"] * mu["csf"]
    img = img * (1 + sum(w[k] * c["texture"][k] for k in ("wm", "gm", "csf")) * texture)
    img = img * (1 + (m["peak"] - 1) * u / (u + c["kappa"]) * (1 + c["kappa"]))
    img = img * (1 - masks["nec"]) + masks["nec"] * m["nec"]
    if mod == "t1ce":
        img = img * (1 - masks["enh"]) + masks["enh"] * c["enh"]
    return img


def thick_slices(vol: np.ndarray, thickness: int, gap: int = 0, offset: int = 0) -> np.ndarray:
    """Axial slabs of ``thickness`` mm every ``thickness + gap`` mm (box profile), linearly resampled to 1 mm."""
    nz, step = vol.shape[2], thickness + gap
    starts = np.arange(offset % step - step, nz + step, step)
    centres, slabs = [], []
    for s in starts:
        a, b = max(int(s), 0), min(int(s) + thickness, nz)
        if b > a:
            centres.append((a + b - 1) / 2)
            slabs.append(vol[:, :, a:b].mean(axis=2))
    centres = np.asarray(centres)
    z = np.arange(nz)
    i = np.clip(np.searchsorted(centres, z, side="right") - 1, 0, len(centres) - 2)
    frac = np.clip((z - centres[i]) / (centres[i + 1] - centres[i]), 0, 1).astype(vol.dtype)
    stack = np.stack(slabs, axis=2)
    return stack[:, :, i] * (1 - frac) + stack[:, :, i + 1] * frac


def acquire(rng: np.random.Generator, img, brain, bias, thick: int) -> tuple[np.ndarray, dict]:
    """Thick slices (0 = 3D), polynomial bias, sum-of-squares noise over 1-3 coils, background 0, int16."""
    img = ndimage.gaussian_filter(img.astype(np.float32), [0.5, 0.5, 0.3]) * bias
    gap = int(rng.integers(0, 2)) if thick else 0
    if thick:
        img = thick_slices(img, thick, gap, int(rng.integers(0, thick + gap)))
    coils, sigma = int(rng.integers(1, 4)), 1.0 / rng.uniform(10, 30)
    power = np.zeros_like(img)
    for _ in range(coils):
        power += (img / np.sqrt(coils) + sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2
        power += (sigma * rng.standard_normal(img.shape, dtype=np.float32)) ** 2
    out = np.sqrt(power) * rng.uniform(200, 1500)
    info = {"slice_mm": thick or 1, "gap_mm": gap, "coils": coils, "snr": round(1 / sigma, 1)}
    return np.where(brain, np.clip(np.rint(out), 1, 32767), 0).astype(np.int16), info


def make_case(tissue: dict, seed: int, index: int) -> dict:
    """``{modality: int16 (240, 240, 155), "seg": uint8, "meta": {...}}`` for case ``index``."""
    rng = np.random.default_rng([seed, 3027, index])
    aff = draw_affine(rng, tissue)
    lat = backward_map(rng, aff)
    inside = np.argwhere(ndimage.map_coordinates(tissue["brain"], lat, order=1) > 0.05)
    lo, hi = np.maximum(inside.min(0) * LAT - LAT, 0), np.minimum(inside.max(0) * LAT + LAT + 1, SHAPE)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    coords = np.stack([on_grid(c, box) for c in lat])
    keys = ("gm", "wm", "csf", "brain", "cortex")
    w = {k: ndimage.map_coordinates(tissue[k], coords, order=1).astype(np.float32) for k in keys}
    brain = w["brain"] > 0.5
    tumours = draw_tumours(rng, w)
    if not tumours:
        raise RuntimeError(f"case {index}: no seed site (seed {seed})")
    u, seg = np.zeros(brain.shape, np.float32), np.zeros(brain.shape, np.uint8)
    for t in tumours:
        sl, ut, lab = tumour(w, t["seed"], t)
        u[sl] = np.maximum(u[sl], ut)
        seg[sl] = np.where(lab == 2, np.maximum(seg[sl], 2), np.where(lab > 0, lab, seg[sl]))
    seg[~brain] = 0
    if not (seg == 2).any():
        raise RuntimeError(f"case {index}: the tumour did not grow an edema (seed {seed})")
    masks = {"nec": seg == 1 if any(t["high_grade"] for t in tumours) else np.zeros_like(brain), "enh": seg == 4}
    masks = {k: ndimage.gaussian_filter(v.astype(np.float32), 0.7) for k, v in masks.items()}
    c = draw_contrasts(rng)
    comp = 1 / (1 + np.exp(-3 * on_grid(ndimage.gaussian_filter(rng.standard_normal(lat.shape[1:]), 2.0), box)))
    texture = ndimage.gaussian_filter(rng.standard_normal(brain.shape, dtype=np.float32), 0.8)
    texture /= max(float(texture.std()), 1e-6)
    xi = (np.stack(np.meshgrid(*(LAT * np.arange(n) for n in lat.shape[1:]), indexing="ij")) - 120) / 100
    out, acq = {"seg": np.zeros(SHAPE, np.uint8)}, {}
    out["seg"][box] = seg
    for mod, p_thick in (("flair", 0.8), ("t2", 0.7), ("t1", 0.4), ("t1ce", 0.15)):
        terms = [np.ones_like(xi[0]), *xi, *monomials(xi)[:6]]
        bias = on_grid(np.exp(sum(rng.normal(0, 0.12) * t for t in terms[1:])).astype(np.float32), box)
        thick = int(rng.integers(3, 6)) if rng.random() < p_thick else 0
        vol = np.zeros(SHAPE, np.int16)
        vol[box], acq[mod] = acquire(rng, render(c, mod, w, comp, texture, u, masks), brain, bias, thick)
        out[mod] = vol
    out["meta"] = {
        "tumours": tumours, "affine_angles_deg": aff["angles_deg"], "acquisition": acq,
        "contrasts": json.loads(json.dumps(c, default=float)), "tumour_ml": round(float((seg > 0).sum()) / 1000, 2),
        "flair_overlap": round(flair_overlap(out["flair"], out["seg"]), 4),
    }  # fmt: skip
    return out


def flair_overlap(flair: np.ndarray, seg: np.ndarray) -> float:
    """Fraction of normal brain voxels brighter on FLAIR than the median edema voxel."""
    normal, edema = flair[(seg == 0) & (flair > 0)], flair[seg == 2]
    return float((normal > np.median(edema)).mean()) if normal.size and edema.size else float("nan")


_TISSUE: dict | None = None


def write_case(out: Path, seed: int, index: int, cid: str) -> tuple[str, dict]:
    """Generate case ``index`` into ``out / cid``, whole or not at all (tmp folder + os.replace)."""
    global _TISSUE
    if _TISSUE is None:
        _TISSUE = load_tissue()
    data = make_case(_TISSUE, seed, index)
    tmp = out / f".tmp-{cid}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for m in (*MODALITIES, "seg"):
        img = nib.Nifti1Image(data[m].astype(np.uint8 if m == "seg" else np.int16), AFFINE)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, tmp / f"{cid}_{m}.nii")
    os.replace(tmp, out / cid)
    return cid, data["meta"]


def build(out, cases: int = 12, seed: int = 0, progress: bool = True, workers: int = 1) -> Path:
    """Write (or reuse, when ``REALANATOMY_GROWTH.json`` has the same parameters) the set; returns ``out``."""
    if cases < 1 or workers < 1:
        raise ValueError(f"cases and workers must be >= 1, got cases={cases} workers={workers}")
    out, d = Path(out), nilearn_data()
    cfg = {"version": VERSION, "cases": cases, "seed": seed,
           "template": {k: {"file": f, "sha256": file_sha256(d / f)} for k, f in TEMPLATE.items()}}  # fmt: skip
    ids = [f"BraTS20_Training_{i + 1:03d}" for i in range(cases)]
    marker = out / MARKER
    old = json.loads(marker.read_text()).get("config") if marker.is_file() else None
    if old == cfg and all((out / i).is_dir() for i in ids):
        return out
    if out.is_dir() and old is None and any(not p.name.startswith(("BraTS20_", ".tmp-")) for p in out.iterdir()):
        raise FileExistsError(f"{out} holds other files and no {MARKER}: choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for old in [*out.glob("BraTS20_Training_*"), *out.glob(".tmp-*")]:
        shutil.rmtree(old)
    jobs = ([out] * cases, [seed] * cases, range(cases), ids)
    if workers > 1:
        with ProcessPoolExecutor(min(workers, cases)) as pool:
            done = list(pool.map(write_case, *jobs))
    else:
        done = [write_case(*j) for j in zip(*jobs, strict=True)]
    for cid, meta in done if progress else ():
        print(f"{cid}: {meta['tumour_ml']} mL, flair_overlap {meta['flair_overlap']}", flush=True)
    note = "REAL anatomy (MNI152 2009a via nilearn), SYNTHETIC reaction-diffusion tumours; not BraTS. A benchmark only."
    atomic_write_json(marker, {"dataset": "realanatomy_growth", "note": note, "config": cfg, "cases": dict(done)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/benchmarks/sets/mni_growth")
    for flag, default in (("--cases", 12), ("--seed", 0), ("--workers", 1)):
        p.add_argument(flag, default=default, type=int)
    a = p.parse_args(argv)
    print(build(a.out, a.cases, a.seed, workers=a.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
