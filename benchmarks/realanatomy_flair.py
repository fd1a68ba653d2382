"""Held-out real-anatomy set, second construction ("mni_flair"): clinical-FLAIR appearance on the MNI152 anatomy.

A benchmark, not training data. Built to differ from ``realanatomy.py`` (the first construction) and from the
synthetic generator in every model it needs, and to carry the appearance that made our models fail:

* **Anatomy**: the ICBM 2009a symmetric template bundled in nilearn (grey / white-matter probability maps),
  moved into the BraTS 2020 grid and deformed per case by a random rotation about all three axes (pitch up to
  10 degrees), per-axis scaling 0.88-1.12 and a smooth displacement field integrated in 4 small steps (a
  diffeomorphism-like warp, up to ~6 mm).
* **Tissue contrast (FLAIR)** from the PARTIAL-VOLUME mixture of the probability maps, per case: CSF 0.05-0.25 x
  white matter, cortex 1.05-1.35 x (so the cortical ribbon is bright, as on clinical FLAIR), periventricular
  hyperintensity: white matter within 2-7 mm of the lateral ventricles 1.15-1.6 x, strongest at the frontal and
  occipital horns (caps), NOT labelled tumour.
* **Tumours** from an infiltration field: an anisotropic Gaussian "cell density" around 1-2 seeds, spread 2.5x
  faster in white matter than grey matter and stopped by CSF (density multiplied by the local tissue fraction and
  smoothed), thresholded: edema where density > t (0.10-0.25), core > 0.6, necrosis > 0.85 in high-grade cases
  (enhancing rim between 0.6 and 0.85). Seeds in white matter or in the cortex (40 %). FLAIR of edema follows the
  density: bright inside, fading to 1.05-1.25 x the tissue at the labelled margin; necrosis dark (0.3-0.9 x white
  matter), enhancing rim 1.0-1.5 x on FLAIR and bright on T1ce.
* **Acquisition**: half the cases acquired as thick axial slices (3-5 mm averaged along z), a coil-sensitivity
  bias (sum of 2-4 broad Gaussian "coils"), then Rician noise (magnitude of a complex signal).

Written in the BraTS 2020 layout (240 x 240 x 155, 1 mm, int16 images, uint8 seg 0/1/2/4) plus
``REALANATOMY_FLAIR.json`` (parameters, per-case draws and the fraction of normal brain brighter on FLAIR than
the median edema voxel, reused when they match). Shares no code with ``brainseg_utils/data`` or ``realanatomy.py``.

    python benchmarks/realanatomy_flair.py --out outputs/benchmarks/sets/mni_flair --cases 12
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainseg_utils.runtime.io import atomic_write_json

MARKER = "REALANATOMY_FLAIR.json"
VERSION = 1
GRID = (240, 240, 155)
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # as BraTS files
MAPS = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MAPS: dict | None = None


def _maps() -> dict:
    """Grey / white / CSF fractions on the BraTS grid (x, y flipped as BraTS; padded to 240 x 240; 155 slices)."""
    global _MAPS
    if _MAPS is None:
        try:
            import nilearn
        except ImportError as exc:
            raise ImportError(
                "this benchmark needs nilearn (it bundles the MNI152 template): pip install nilearn"
            ) from exc
        folder = Path(nilearn.__file__).parent / "datasets" / "data"
        out, shas = {}, {}
        for k, name in MAPS.items():
            path = folder / name
            if not path.exists():
                raise FileNotFoundError(f"{path}: nilearn {nilearn.__version__} does not bundle the MNI152 2009 maps")
            shas[k] = hashlib.sha256(path.read_bytes()).hexdigest()
            a = np.asarray(nib.load(path).dataobj, np.float32)[::-1, ::-1, : GRID[2]] / 255.0
            pad = [((g - s) // 2, g - s - (g - s) // 2) for g, s in zip(GRID[:2], a.shape[:2], strict=True)]
            out[k] = np.pad(a, [*pad, (0, 0)])
        inside = ndimage.binary_fill_holes(ndimage.binary_closing(out["gm"] + out["wm"] > 0.25, iterations=3))
        out["csf"] = np.where(inside, np.clip(1.0 - out["gm"] - out["wm"], 0, 1), 0).astype(np.float32)
        out["inside"] = inside
        out["sha256"] = shas
        _MAPS = out
    return _MAPS


def _smooth(rng, shape, cells: int) -> np.ndarray:
    """Zero-mean smooth field, ~unit amplitude: random values on a ``cells``^3 lattice, cubic-interpolated."""
    lattice = rng.standard_normal((cells,) * 3).astype(np.float32)
    return ndimage.zoom(lattice, [s / cells for s in shape], order=3)[: shape[0], : shape[1], : shape[2]]


def _rotation(rng) -> np.ndarray:
    a, b, c = np.deg2rad(rng.uniform(-10, 10)), np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-12, 12))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return (rx @ ry @ rz).astype(np.float32)


def deform(rng, maps: dict) -> dict:
    """Rotated, scaled and warped copies of the tissue fractions (trilinear)."""
    centre = (np.array(GRID, np.float32) - 1) / 2
    mat = _rotation(rng) * rng.uniform(0.88, 1.12, 3).astype(np.float32)[None, :]
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in GRID), indexing="ij"))
    coords = np.einsum("ij,jxyz->ixyz", mat, grid - centre[:, None, None, None]) + centre[:, None, None, None]
    velocity = [1.5 * _smooth(rng, GRID, 5) for _ in range(3)]
    for _ in range(4):  # integrate a stationary velocity field in small steps
        coords += np.stack([ndimage.map_coordinates(v, coords, order=1, mode="nearest") for v in velocity])
    return {k: ndimage.map_coordinates(maps[k], coords, order=1).astype(np.float32) for k in ("gm", "wm", "csf")}


def _density(rng, tissue: dict, seed_at: np.ndarray, radius: float) -> np.ndarray:
    """Infiltration density in [0, 1] around one seed: anisotropic Gaussian, faster in white matter, no CSF."""
    axes = radius * rng.uniform(0.7, 1.3, 3)
    ext = int(3 * axes.max()) + 4
    box = tuple(slice(max(0, int(c) - ext), min(n, int(c) + ext)) for c, n in zip(seed_at, GRID, strict=True))
    g = np.meshgrid(*(np.arange(s.start, s.stop, dtype=np.float32) for s in box), indexing="ij")
    q = sum(((gi - c) / a) ** 2 for gi, c, a in zip(g, seed_at, axes, strict=True))
    wm, gm = tissue["wm"][box], tissue["gm"][box]
    reach = np.exp(-0.5 * q / (0.4 + 0.6 * (wm + 0.4 * gm) / (wm + gm + 1e-3)) ** 2)
    reach *= np.clip((wm + gm) * 1.2, 0, 1)
    out = np.zeros(GRID, np.float32)
    out[box] = ndimage.gaussian_filter(reach, 1.0)
    return out / max(float(out.max()), 1e-6)


def plant(rng, tissue: dict) -> tuple[np.ndarray, np.ndarray, list]:
    """(seg labels, density, descriptions): 1-2 seeds, high grade in 65 % of cases."""
    brain = (tissue["gm"] + tissue["wm"]) > 0.5
    z = np.arange(GRID[2])
    band = ((z > 0.3 * GRID[2]) & (z < 0.85 * GRID[2]))[None, None, :]
    high = bool(rng.random() < 0.65)
    dens = np.zeros(GRID, np.float32)
    desc = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        cortical = bool(rng.random() < 0.4)
        where = (tissue["gm"] > 0.6 if cortical else tissue["wm"] > 0.8) & band & brain
        seed_at = np.argwhere(where)[rng.integers(where.sum())].astype(np.float32)
        radius = float(rng.uniform(6, 22))
        dens = np.maximum(dens, _density(rng, tissue, seed_at, radius))
        desc.append({"seed": seed_at.tolist(), "radius_mm": round(radius, 1), "cortical": cortical})
    t_edema = float(rng.uniform(0.10, 0.25))
    seg = np.zeros(GRID, np.uint8)
    seg[(dens > t_edema) & brain] = 2
    core = (dens > 0.6) & brain
    seg[core] = 4 if high else 1
    if high:
        seg[(dens > 0.85) & brain] = 1
    return seg, dens, [{"high_grade": high, "edema_threshold": round(t_edema, 3), **d} for d in desc]


def _periventricular(tissue: dict) -> np.ndarray:
    """0..1 weight of white matter near the lateral ventricles, largest at their front and back (the caps)."""
    csf = tissue["csf"] > 0.8
    deep = ndimage.distance_transform_edt((tissue["gm"] + tissue["wm"] + tissue["csf"]) > 0.3) > 22
    vent = ndimage.binary_opening(csf & deep, iterations=1)
    if not vent.any():
        return np.zeros(GRID, np.float32)
    dist = ndimage.distance_transform_edt(~vent)
    ys = np.flatnonzero(vent.any((0, 2)))
    y = np.arange(GRID[1], dtype=np.float32)[None, :, None]
    horn = np.clip(np.maximum(ys.min() + 12 - y, y - (ys.max() - 12)) / 12, 0, 1)  # 1 at the horn tips
    return (np.clip((7 - dist) / 5, 0, 1) * (0.35 + 0.65 * horn)).astype(np.float32)


def render(rng, tissue: dict, seg: np.ndarray, dens: np.ndarray, t_edema: float) -> tuple[dict, dict]:
    """Four modalities (float32) and the per-case contrast draws."""
    d = {
        k: float(rng.uniform(*v))
        for k, v in {
            "csf": (0.05, 0.25),
            "gm": (1.05, 1.35),
            "pvh": (1.15, 1.6),
            "edema": (1.4, 2.0),
            "margin": (1.05, 1.25),
            "necrosis": (0.3, 0.9),
            "rim": (1.0, 1.5),
        }.items()
    }
    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    pv = _periventricular(tissue)
    flair = csf * d["csf"] + gm * d["gm"] + wm * (1 + (d["pvh"] - 1) * pv)
    rel = np.clip((dens - t_edema) / (1 - t_edema), 0, 1) ** 0.6  # 0 at the labelled margin, 1 at the centre
    ed = seg == 2
    flair[ed] *= d["margin"] + (d["edema"] - d["margin"]) * rel[ed]
    flair[seg == 1] = d["necrosis"] if (seg == 4).any() else d["edema"] * 1.05
    flair[seg == 4] = d["rim"]
    t2 = csf * 1.0 + gm * 0.62 + wm * 0.45
    t2[ed] = 0.45 + 0.4 * (0.3 + 0.7 * rel[ed])
    t2[(seg == 1) | (seg == 4)] = 0.85
    t1 = csf * 0.25 + gm * 0.6 + wm * 0.85
    t1[seg > 0] = 0.5
    t1ce = t1.copy()
    t1ce[seg == 4] = 1.3
    images = {"flair": flair, "t1": t1, "t1ce": t1ce, "t2": t2}
    return _acquire(rng, images, (gm + wm + csf) > 0.3), {k: round(v, 3) for k, v in d.items()}


def _acquire(rng, images: dict, head: np.ndarray) -> dict:
    """Thick slices (half the cases), coil-sensitivity bias, Rician noise, int16 scale; background 0."""
    thick = int(rng.choice([1, 3, 4, 5], p=[0.5, 0.2, 0.15, 0.15]))
    g = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in GRID), indexing="ij")
    coil = np.zeros(GRID, np.float32)
    for _ in range(int(rng.integers(2, 5))):
        c, w = rng.uniform(-1.2, 1.2, 3), rng.uniform(0.6, 1.4)
        coil += rng.uniform(0.5, 1.0) * np.exp(-sum((gi - ci) ** 2 for gi, ci in zip(g, c, strict=True)) / w**2)
    coil = 0.6 + 0.8 * coil / coil.max()
    out = {}
    for m, img in images.items():
        if thick > 1:
            img = ndimage.uniform_filter1d(img, thick, axis=2)
        img = img * coil
        sigma = rng.uniform(0.02, 0.04)
        img = np.sqrt((img + rng.normal(0, sigma, GRID)) ** 2 + rng.normal(0, sigma, GRID) ** 2)
        img[~head] = 0
        out[m] = (img * rng.uniform(400, 1200)).astype(np.float32)
    return out


def make_case(seed: int, index: int) -> dict:
    """One case: four modalities, seg and metadata (seeded by ``(seed, 2000 + index)``)."""
    rng = np.random.default_rng([seed, 2000 + index])
    tissue = deform(rng, _maps())
    seg, dens, tumours = plant(rng, tissue)
    images, contrast = render(rng, tissue, seg, dens, tumours[0]["edema_threshold"])
    f, normal, edema = images["flair"], (images["flair"] > 0) & (seg == 0), seg == 2
    overlap = float((f[normal] > np.median(f[edema])).mean()) if edema.any() else None
    meta = {
        "tumours": tumours,
        "contrast": contrast,
        "flair_overlap": overlap,
        "tumour_ml": float((seg > 0).sum()) / 1e3,
    }
    return {**images, "seg": seg, "meta": meta}


def _save(a: np.ndarray, path: Path, dtype) -> None:
    img = nib.Nifti1Image(a.astype(dtype), AFFINE)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _write(out: Path, seed: int, index: int) -> tuple[str, dict]:
    cid = f"BraTS20_Training_{index + 1:03d}"
    case = make_case(seed, index)
    tmp = out / f".tmp-{cid}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for m in ("flair", "t1", "t1ce", "t2"):
        _save(np.rint(np.clip(case[m], 0, 32767)), tmp / f"{cid}_{m}.nii", np.int16)
    _save(case["seg"], tmp / f"{cid}_seg.nii", np.uint8)
    shutil.rmtree(out / cid, ignore_errors=True)
    os.replace(tmp, out / cid)  # a case folder appears whole or not at all
    return cid, case["meta"]


def build(out, cases: int = 12, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Write (or reuse) the set under ``out``; returns it. Same files whatever ``workers`` (per-case streams)."""
    out = Path(out)
    config = {"version": VERSION, "cases": cases, "seed": seed, "templates_sha256": _maps()["sha256"]}
    marker, ids = out / MARKER, [f"BraTS20_Training_{i + 1:03d}" for i in range(cases)]
    if (
        marker.exists()
        and json.loads(marker.read_text()).get("config") == config
        and all((out / c).is_dir() for c in ids)
    ):
        return out
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(("BraTS20_Training_", ".tmp-", MARKER))):
        raise FileExistsError(f"{out} holds other files; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, cases))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_write, [out] * cases, [seed] * cases, range(cases)))
    else:
        done = [_write(out, seed, i) for i in range(cases)]
    if progress:
        for cid, meta in done:
            print(f"{cid}: overlap {meta['flair_overlap']}, tumour {meta['tumour_ml']:.1f} mL, {meta['contrast']}")
    note = "REAL anatomy (MNI152 2009, nilearn) with SYNTHETIC tumours and clinical-FLAIR-like contrast; not BraTS"
    atomic_write_json(marker, {"dataset": "mni_flair", "note": note, "config": config, "cases": dict(done)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/benchmarks/sets/mni_flair")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    a = p.parse_args(argv)
    print(build(a.out, a.cases, a.seed, workers=a.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
