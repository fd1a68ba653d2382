"""Held-out REAL-ANATOMY evaluation set: the MNI152 2009 template with implanted (synthetic) tumours.

A benchmark, not training data: it asks whether a model trained on our synthetic generator
works on real brain anatomy. The anatomy is the ICBM 2009a symmetric template (T1 and grey /
white-matter probability maps, 197 x 233 x 189 at 1 mm, skull-stripped) that ships inside the
PyPI package ``nilearn`` (``nilearn/datasets/data/mni_icbm152_*_09a_converted.nii.gz``; offline,
nothing is downloaded). The generator (``brainseg_utils/data/synthetic.py``) never reads it, and the
tumours here are implanted by this file's own code, not by the generator's.

Per case (``numpy.random.default_rng([seed, 1000 + i])``):
  * the template is moved into the BraTS 2020 grid (LPS-like axes as BraTS: x and y flipped;
    padded to 240 x 240, the 155 slices holding the brain) and deformed: random affine (rotation,
    anisotropic scale, shift) plus a smooth elastic field, plus MASS EFFECT (tissue pushed away
    from each tumour centre, so ventricles and midline move);
  * 1 tumour (25% of cases 2) seeded in white matter: an irregular core (high grade: enhancing
    rim 4 around necrosis 1; low grade: non-enhancing core 1), and edema (2) that spreads along
    white matter (a blurred core weighted by the real WM probability), stopped by CSF;
  * contrasts from the real tissue probabilities with random per-case means (FLAIR: CSF dark,
    GM > WM, edema bright; T2: CSF bright; T1 / T1ce: the real template T1, tumour darker, rim
    enhancing on T1ce), in half the cases a periventricular FLAIR halo (not tumour), then blur,
    a smooth multiplicative bias field, Rician-like noise and a random scale to int16.

Written in the BraTS 2020 layout (``BraTS20_Training_NNN/..._{flair,t1,t1ce,t2,seg}.nii``,
240 x 240 x 155, 1 mm, labels 0/1/2/4) so ``brainseg_utils.data.brats`` loads it unchanged, plus
``REALANATOMY.json`` (parameters, template sha256s; reused when they match).

    python benchmarks/realanatomy.py --out outputs/benchmarks/realanatomy --cases 12
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

from brainseg_utils.runtime.io import atomic_write_json, file_sha256

MARKER = "REALANATOMY.json"
VERSION = 1
SHAPE = (240, 240, 155)
MODALITIES = ("flair", "t1", "t1ce", "t2")
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_dir() -> Path:
    try:
        import nilearn
    except ImportError as exc:  # only this benchmark needs it (requirements-dev.txt)
        raise ImportError(
            "the real-anatomy benchmark needs nilearn (it bundles the MNI152 2009 template): "
            "pip install 'nilearn>=0.10,<0.13'"
        ) from exc
    d = Path(nilearn.__file__).parent / "datasets" / "data"
    missing = [f for f in TEMPLATE_FILES.values() if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{d}: nilearn {nilearn.__version__} does not bundle {missing}; expected the ICBM152 2009 template files"
        )
    return d


def load_template() -> dict[str, np.ndarray]:
    """float32 maps in [0, 1] on the BraTS grid (240, 240, 155): t1, gm, wm, csf, brain (bool)."""
    d = template_dir()
    out = {}
    for k, f in TEMPLATE_FILES.items():
        a = np.asarray(nib.load(d / f).dataobj, dtype=np.float32) / 255.0  # (197, 233, 189), RAS
        if a.shape != (197, 233, 189):
            raise ValueError(f"{d / f}: expected shape (197, 233, 189), found {a.shape}")
        a = a[::-1, ::-1, :]  # RAS -> the BraTS files' x/y-flipped axes
        z = 0  # the brain occupies slices 0..154 of the template
        a = a[:, :, z : z + SHAPE[2]]
        px, py = SHAPE[0] - a.shape[0], SHAPE[1] - a.shape[1]
        out[k] = np.pad(a, ((px // 2, px - px // 2), (py // 2, py - py // 2), (0, 0)))
    brain = ndimage.binary_fill_holes(out["t1"] > 0.03)
    out["csf"] = np.where(brain, np.clip(1.0 - out["gm"] - out["wm"], 0.0, 1.0), 0.0).astype(np.float32)
    out["brain"] = brain
    return out


# ----------------------------------------------------------------------------- geometry
def _lowres_field(rng: np.random.Generator, grid: int, shape) -> np.ndarray:
    """Smooth random field, unit-ish amplitude: a (grid^3) Gaussian lattice, cubic-zoomed to ``shape``."""
    coarse = rng.standard_normal((grid, grid, grid)).astype(np.float32)
    return ndimage.zoom(coarse, [s / grid for s in shape], order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _sample_coords(rng: np.random.Generator, centres: list[np.ndarray], pushes: list[float]) -> np.ndarray:
    """Backward map (3, X, Y, Z): where each output voxel samples the template.

    Affine about the volume centre + elastic displacement (~3 mm) + radial mass effect.
    """
    c0 = (np.array(SHAPE, np.float32) - 1) / 2
    ax, ay, az = np.deg2rad(rng.uniform(-4, 4)), np.deg2rad(rng.uniform(-4, 4)), np.deg2rad(rng.uniform(-10, 10))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = (rz @ ry @ rx / rng.uniform(0.9, 1.08, 3)[None, :]).astype(np.float32)
    shift = rng.uniform(-5, 5, 3).astype(np.float32)
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij"))
    rel = grid - c0[:, None, None, None]
    coords = np.einsum("ij,jxyz->ixyz", m, rel) + (c0 - shift)[:, None, None, None]
    for k in range(3):
        coords[k] += 3.0 * _lowres_field(rng, 6, SHAPE)
    # mass effect: sample closer to the centre -> tissue moves outward
    for c, push in zip(centres, pushes, strict=True):
        d = grid - c[:, None, None, None]
        r = np.sqrt((d**2).sum(0)) + 1e-3
        mag = push * np.exp(-((r / (3.0 * push + 10.0)) ** 2))
        coords -= d / r * np.minimum(mag, 0.8 * r)
    return coords


def _warp(a: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(a, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


# ----------------------------------------------------------------------------- tumours
def _tumour(
    rng: np.random.Generator,
    wm: np.ndarray,
    csf: np.ndarray,
    brain: np.ndarray,
    centre: np.ndarray,
    radius: float,
    high_grade: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(core label (uint8 0/1/4), edema bool, infiltration float) for one tumour on the full grid."""
    ext = int(radius * 4 + 20)
    sl = tuple(slice(max(0, int(centre[k]) - ext), min(SHAPE[k], int(centre[k]) + ext + 1)) for k in range(3))
    g = np.stack(np.meshgrid(*(np.arange(s.start, s.stop, dtype=np.float32) for s in sl), indexing="ij"))
    d = g - centre[:, None, None, None]
    r = np.sqrt((d**2).sum(0)) + 1e-3
    u = d / r
    # Irregular outline: radius modulated by a few random directional lobes (not a noise field).
    scale = np.ones_like(r)
    for _ in range(int(rng.integers(3, 7))):
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        scale += rng.uniform(0.05, 0.25) * np.cos(
            rng.uniform(1.5, 4.0) * np.einsum("i,ixyz->xyz", v, u) + rng.uniform(0, 2 * np.pi)
        )
    rn = r / (radius * scale)
    b = brain[sl] & (csf[sl] < 0.7)
    core = np.zeros(r.shape, np.uint8)
    if high_grade:
        rim = rng.uniform(0.55, 0.8)  # inner radius of the enhancing rim, relative
        thick = 1.0 + 0.12 * _lowres_field(rng, 5, r.shape)
        core[(rn < 1.0) & b] = 4
        core[(rn < rim * thick) & b] = 1
    else:
        core[(rn < 1.0) & b] = 1
    # Edema spreads along white matter: blur the core, weight by WM probability, threshold.
    spread = ndimage.gaussian_filter((rn < 1.0).astype(np.float32), rng.uniform(6, 14))
    spread /= max(float(spread.max()), 1e-6)
    infil = spread * (0.25 + 0.75 * wm[sl])
    edema = (infil > rng.uniform(0.05, 0.15)) & b & (core == 0)
    full_core = np.zeros(SHAPE, np.uint8)
    full_edema = np.zeros(SHAPE, bool)
    full_infil = np.zeros(SHAPE, np.float32)
    full_core[sl], full_edema[sl], full_infil[sl] = core, edema, infil
    return full_core, full_edema, full_infil


def make_case(tpl: dict, seed: int, index: int) -> dict:
    """One case: ``{modality: float32 (240, 240, 155) >= 0, "seg": uint8 labels, "meta": {...}}``."""
    rng = np.random.default_rng([seed, 1000 + index])
    n_tum = 2 if rng.random() < 0.25 else 1
    # Seeds in deep-ish white matter of the middle slices of the undeformed template.
    wm0 = ndimage.binary_erosion(tpl["wm"] > 0.6, iterations=2)
    wm0[:, :, : int(SHAPE[2] * 0.3)] = False
    wm0[:, :, int(SHAPE[2] * 0.85) :] = False
    cand = np.argwhere(wm0)
    centres = [cand[rng.integers(len(cand))].astype(np.float32) for _ in range(n_tum)]
    radii = [float(np.clip(rng.lognormal(np.log(11), 0.4), 5, 24)) / (1.4 if n_tum > 1 else 1.0) for _ in range(n_tum)]
    coords = _sample_coords(rng, centres, [0.5 * r for r in radii])
    t1, gm, wm, csf = (_warp(tpl[k], coords) for k in ("t1", "gm", "wm", "csf"))
    brain = _warp(tpl["brain"].astype(np.float32), coords) > 0.5
    # Centres are used as output-grid points (the deformation is small): mass effect pushes tissue
    # away from them and the tumour is painted around them on the deformed anatomy.
    seg = np.zeros(SHAPE, np.uint8)
    infil = np.zeros(SHAPE, np.float32)
    grades = []
    for c, rad in zip(centres, radii, strict=True):
        hg = bool(rng.random() < 0.7)
        grades.append(hg)
        core, edema, inf = _tumour(rng, wm, csf, brain, c, rad, hg)
        seg[(edema) & (seg == 0)] = 2
        seg[core > 0] = core[core > 0]
        infil = np.maximum(infil, inf)
    if not (seg > 0).any():
        raise RuntimeError(f"case {index}: no tumour voxel was planted (seed {seed})")
    out = _render(rng, t1, gm, wm, csf, brain, seg, infil)
    out["seg"] = seg
    out["meta"] = {
        "n_tumours": n_tum,
        "radii_mm": [round(r, 1) for r in radii],
        "high_grade": grades,
        "tumour_ml": round(float((seg > 0).sum()) / 1000.0, 2),
    }
    return out


def _render(rng, t1, gm, wm, csf, brain, seg, infil) -> dict:
    """Intensity volumes of the four modalities from tissue probabilities and labels."""
    tum = {lab: ndimage.gaussian_filter((seg == lab).astype(np.float32), 0.7) for lab in (1, 2, 4)}
    normal = np.clip(1.0 - sum(tum.values()), 0.0, 1.0)
    # per-case tissue means (arbitrary units); contrast directions as on real scans
    fl = {
        "csf": rng.uniform(0.05, 0.2),
        "gm": rng.uniform(0.55, 0.72),
        "wm": rng.uniform(0.38, 0.52),
        2: rng.uniform(0.85, 1.1),
        1: rng.uniform(0.45, 0.85),
        4: rng.uniform(0.7, 0.95),
    }
    t2 = {
        "csf": rng.uniform(0.9, 1.1),
        "gm": rng.uniform(0.5, 0.62),
        "wm": rng.uniform(0.35, 0.45),
        2: rng.uniform(0.75, 0.9),
        1: rng.uniform(0.85, 1.0),
        4: rng.uniform(0.6, 0.75),
    }

    def mix(means, tissue_extra=None):
        base = means["csf"] * csf + means["gm"] * gm + means["wm"] * wm
        if tissue_extra is not None:
            base = base * tissue_extra
        # edema brightness grows with infiltration
        ed = means[2] * (0.85 + 0.3 * np.clip(infil, 0, 1))
        return normal * base + tum[2] * ed + tum[1] * means[1] + tum[4] * means[4]

    halo = np.ones_like(wm)
    if rng.random() < 0.5:  # periventricular FLAIR hyperintensity (caps/halo), not tumour
        vent = (csf > 0.8) & (ndimage.distance_transform_edt(brain) > 25)
        near = ndimage.distance_transform_edt(~vent) if vent.any() else np.full(wm.shape, 99.0, np.float32)
        halo = 1.0 + rng.uniform(0.2, 0.5) * np.exp(-near / rng.uniform(2.0, 4.0)) * (wm > 0.3)
    vols = {"flair": mix(fl, halo), "t2": mix(t2)}
    t1_tumour = {1: 0.45, 2: 0.8, 4: 0.85}
    t1_img = t1 * normal + sum(tum[k] * t1_tumour[k] * 0.6 for k in tum)
    vols["t1"] = t1_img
    vols["t1ce"] = t1_img + tum[4] * rng.uniform(0.5, 0.8)
    out = {}
    for m, v in vols.items():
        v = ndimage.gaussian_filter(v.astype(np.float32), rng.uniform(0.3, 1.0))
        v *= np.exp(0.25 * _lowres_field(rng, 4, SHAPE))  # bias field
        v = np.abs(v + rng.uniform(0.01, 0.035) * rng.standard_normal(SHAPE).astype(np.float32))
        v = np.where(brain, np.maximum(v, 0.002), 0.0) * rng.uniform(300, 2000)
        out[m] = v.astype(np.float32)
    return out


# ----------------------------------------------------------------------------- writing
def _save(arr: np.ndarray, path: Path, dtype) -> None:
    img = nib.Nifti1Image(arr.astype(dtype), AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(dtype)
    nib.save(img, path)


def _config(cases: int, seed: int) -> dict:
    d = template_dir()
    return {
        "version": VERSION,
        "cases": cases,
        "seed": seed,
        "template": {k: {"file": f, "sha256": file_sha256(d / f)} for k, f in TEMPLATE_FILES.items()},
    }


_TEMPLATE: dict | None = None


def _write_case(out: Path, seed: int, index: int, cid: str) -> tuple[str, dict]:
    """Generate case ``index`` and write it as ``out / cid`` (whole or not at all); returns (cid, meta)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = load_template()
    data = make_case(_TEMPLATE, seed, index)
    tmp = out / f".tmp-{cid}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for m in MODALITIES:
        _save(np.rint(data[m]), tmp / f"{cid}_{m}.nii", np.int16)
    _save(data["seg"], tmp / f"{cid}_seg.nii", np.uint8)
    os.replace(tmp, out / cid)
    return cid, data["meta"]


def build(out: str | os.PathLike, cases: int = 12, seed: int = 0, progress: bool = True, workers: int = 1) -> Path:
    """Write (or reuse) the real-anatomy set under ``out``; returns ``out``.

    ``workers`` > 1 generates cases in that many processes (each case has its own random
    stream, so the files are the same whatever the number of workers).
    """
    out = Path(out)
    cfg = _config(cases, seed)
    marker = out / MARKER
    ids = [f"BraTS20_Training_{i + 1:03d}" for i in range(cases)]
    if marker.exists() and json.loads(marker.read_text()).get("config") == cfg and all((out / c).is_dir() for c in ids):
        return out
    if (
        out.exists()
        and any(out.iterdir())
        and not marker.exists()
        and not all(p.name.startswith(("BraTS20_Training_", ".tmp-")) for p in out.iterdir())
    ):
        raise FileExistsError(f"{out} exists and is not a real-anatomy benchmark folder; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in out.glob("BraTS20_Training_*"):
        shutil.rmtree(stale)
    args = ([out] * cases, [seed] * cases, range(cases), ids)
    if workers > 1:
        with ProcessPoolExecutor(min(workers, cases)) as pool:
            done = list(pool.map(_write_case, *args))
    else:
        done = list(map(_write_case, *args))
    metas = dict(done)
    if progress:
        for cid, meta in done:
            print(f"{cid}: {meta}", flush=True)
    atomic_write_json(
        marker,
        {
            "dataset": "realanatomy",
            "note": "REAL anatomy (MNI152 2009 template from nilearn), SYNTHETIC implanted "
            "tumours and derived contrasts; not BraTS. A benchmark only.",
            "config": cfg,
            "cases": metas,
        },
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/benchmarks/realanatomy")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = p.parse_args(argv)
    print(build(args.out, args.cases, args.seed, workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
