"""Synthetic brain-MRI volumes in the exact BraTS 2020 training layout (the embedded default data).

Layout written under ``out``::

    BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii   (or .nii.gz)
    ...
    name_mapping.csv
    SYNTHETIC.json          # generator parameters; marks the dataset as synthetic

Each volume is 240 x 240 x ``depth`` voxels (default 155) at 1 mm, int16, axial slices along
the last axis, background exactly 0 (skull-stripped). ``seg`` holds BraTS labels
0 background, 1 necrotic / non-enhancing core (NCR/NET), 2 peritumoral edema (ED),
4 GD-enhancing tumour (ET).

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

Deterministic for a seed: case ``i`` uses ``numpy.random.default_rng([seed, i])`` whatever the
number of cases or workers; its appearance draws come from a separate stream
(``default_rng([seed, i, APPEARANCE_STREAM])``), so both appearance modes share anatomy and tumours.

Quirks of the real dataset can be planted so tests exercise them (``quirks=``):
  * ``"alias355"``: the last case is numbered 355 and its label file is named
    ``W39_1998.09.19_Segm.nii`` as on Kaggle;
  * ``"gz"``: one case is written as ``.nii.gz`` beside the ``.nii`` cases;
  * ``"float32"``: one case's images are stored as float32 instead of int16.

CLI: ``python -m brainseg_utils.data.synthetic --out DIR --cases N --seed S [--depth D] [--gz]``
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainseg_utils.data.brats import MODALITIES
from brainseg_utils.runtime.io import atomic_write, atomic_write_json

SHAPE_XY = (240, 240)
DEFAULT_DEPTH = 155
ALIAS_355 = "W39_1998.09.19_Segm.nii"
KNOWN_QUIRKS = ("alias355", "gz", "float32")
MARKER = "SYNTHETIC.json"
# BraTS 2020 files carry this LPS-like affine (1 mm voxels, y flipped with origin at 239).
BRATS_AFFINE = np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

# Tissue classes of the hidden "anatomy" volume.
BG, CSF, GM, WM, ED, NCR, ET = range(7)
# Mean intensity per tissue class (BG, CSF, GM, WM, ED, NCR, ET), arbitrary units.
CONTRAST = {
    "t1": (0.0, 0.20, 0.55, 0.75, 0.45, 0.30, 0.50),
    "t1ce": (0.0, 0.22, 0.58, 0.75, 0.48, 0.25, 1.10),
    "t2": (0.0, 1.00, 0.55, 0.38, 0.82, 0.92, 0.62),
    "flair": (0.0, 0.10, 0.60, 0.45, 1.00, 0.55, 0.80),
}
APPEARANCES = ("fixed", "randomised")
APPEARANCE_STREAM = 7  # third element of the appearance generator's seed (anatomy and tumours: [seed, i])
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


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of one synthetic dataset (stored in SYNTHETIC.json)."""

    cases: int = 8
    seed: int = 0
    depth: int = DEFAULT_DEPTH
    gz: bool = False
    quirks: tuple[str, ...] = field(default_factory=tuple)
    appearance: str = "fixed"

    def __post_init__(self) -> None:
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance must be one of {list(APPEARANCES)}, got {self.appearance!r}")
        if self.cases < 1:
            raise ValueError(f"cases must be >= 1, got {self.cases}")
        if not 16 <= self.depth <= 400:
            raise ValueError(f"depth must be in [16, 400] slices, got {self.depth}")
        unknown = set(self.quirks) - set(KNOWN_QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirk(s) {sorted(unknown)}; options: {list(KNOWN_QUIRKS)}")
        if self.quirks and self.cases < 3:
            raise ValueError(f"planting quirks needs >= 3 cases (one per quirk), got {self.cases}")


def case_ids(cfg: SyntheticConfig) -> list[str]:
    """Case ids in generation order; with the ``alias355`` quirk the last one is 355."""
    numbers = list(range(1, cfg.cases + 1))
    if "alias355" in cfg.quirks:
        numbers[-1] = 355
    return [f"BraTS20_Training_{n:03d}" for n in numbers]


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


def generate_case(cfg: SyntheticConfig, index: int) -> dict:
    """Arrays of case ``index``: ``{modality: float32 volume, "seg": uint8 labels, "meta": {...}}``."""
    rng = np.random.default_rng([cfg.seed, index])
    tissue, r = _anatomy(rng, cfg.depth)
    planted = _tumours(rng, tissue, r)
    texture = _smooth_noise(rng, tissue.shape, 1.5, 1)
    look = np.random.default_rng([cfg.seed, index, APPEARANCE_STREAM]) if cfg.appearance == "randomised" else None
    out = {m: _render(rng, tissue, m, texture, look) for m in MODALITIES}
    seg = np.zeros(tissue.shape, np.uint8)
    seg[tissue == NCR] = 1
    seg[tissue == ED] = 2
    seg[tissue == ET] = 4
    out["seg"] = seg
    out["meta"] = {"tumours": planted, "grade": "HGG" if (seg == 4).any() else "LGG"}
    return out


# ----------------------------------------------------------------------------- writing
def _save_nifti(arr: np.ndarray, path: Path, dtype) -> None:
    img = nib.Nifti1Image(arr.astype(dtype), BRATS_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(dtype)
    nib.save(img, path)


def _write_case(cfg: SyntheticConfig, index: int, out: Path) -> tuple[str, str]:
    cid = case_ids(cfg)[index]
    data = generate_case(cfg, index)
    gz = cfg.gz or ("gz" in cfg.quirks and index == 0)
    img_dtype = np.float32 if ("float32" in cfg.quirks and index == 1) else np.int16
    ext = ".nii.gz" if gz else ".nii"
    tmp = out / f".tmp-{cid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for m in MODALITIES:
        _save_nifti(np.rint(data[m]), tmp / f"{cid}_{m}{ext}", img_dtype)
    seg_name = ALIAS_355 if ("alias355" in cfg.quirks and cid.endswith("_355")) else f"{cid}_seg{ext}"
    _save_nifti(data["seg"], tmp / seg_name, np.uint8)
    final = out / cid
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a case folder appears whole or not at all
    return cid, data["meta"]["grade"]


def _complete(out: Path, cfg: SyntheticConfig) -> bool:
    marker = out / MARKER
    if not marker.exists():
        return False
    try:
        stored = json.loads(marker.read_text())["config"]
    except (ValueError, KeyError):
        return False
    if isinstance(stored, dict):
        stored.setdefault("appearance", "fixed")  # written before the option existed: the fixed contrast table
    return stored == json.loads(json.dumps(asdict(cfg))) and all((out / c).is_dir() for c in case_ids(cfg))


def generate_dataset(
    out: str | os.PathLike, cfg: SyntheticConfig | None = None, *, workers: int | None = None, progress: bool = True
) -> Path:
    """Write the dataset under ``out``; reuse it when a complete one with the same config is there.

    Returns ``out``. A folder holding a different synthetic config is regenerated; a folder
    with other, non-synthetic content is refused rather than overwritten.
    """
    cfg = cfg or SyntheticConfig()
    out = Path(out)
    if _complete(out, cfg):
        return out
    if (
        out.exists()
        and any(out.iterdir())
        and not (out / MARKER).exists()
        and not all(p.name.startswith(("BraTS20_Training_", ".tmp-")) for p in out.iterdir())
    ):
        raise FileExistsError(f"{out} exists and is not a synthetic dataset folder; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    for stale in out.glob("BraTS20_Training_*"):
        shutil.rmtree(stale)
    workers = workers or min(len(case_ids(cfg)), os.cpu_count() or 1)
    t0 = time.perf_counter()
    bar = _progress(len(case_ids(cfg)), "synthetic cases", progress)
    grades = {}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for cid, grade in pool.map(_write_case, [cfg] * cfg.cases, range(cfg.cases), [out] * cfg.cases):
                grades[cid] = grade
                bar.update()
    else:
        for i in range(cfg.cases):
            cid, grade = _write_case(cfg, i, out)
            grades[cid] = grade
            bar.update()
    bar.close()
    _write_name_mapping(out, grades)
    atomic_write_json(
        out / MARKER,
        {
            "dataset": "synthetic",
            "note": "Synthetic volumes in the BraTS 2020 layout; numbers measured on them are synthetic results.",
            "config": asdict(cfg),
            "generation_seconds": round(time.perf_counter() - t0, 2),
        },
    )
    return out


def _write_name_mapping(out: Path, grades: dict[str, str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "Grade",
            "BraTS_2017_subject_ID",
            "BraTS_2018_subject_ID",
            "TCGA_TCIA_subject_ID",
            "BraTS_2019_subject_ID",
            "BraTS_2020_subject_ID",
        ]
    )
    for cid in sorted(grades):
        w.writerow([grades[cid], "NA", "NA", "NA", "NA", cid])

    def _write(tmp: str) -> None:
        Path(tmp).write_text(buf.getvalue())

    atomic_write(out / "name_mapping.csv", _write)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled)


def is_synthetic(root: str | os.PathLike) -> bool:
    """True when ``root`` (or a parent up to 3 levels) was written by this generator."""
    root = Path(root).resolve()
    return any((p / MARKER).exists() for p in [root, *list(root.parents)[:3]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainseg_utils.data.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created; reused when complete)")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--depth", type=int, default=DEFAULT_DEPTH, help=f"axial slices per volume (default {DEFAULT_DEPTH})"
    )
    p.add_argument("--gz", action="store_true", help="write .nii.gz instead of .nii")
    p.add_argument("--quirks", nargs="*", default=[], choices=KNOWN_QUIRKS, help="plant real-data quirks")
    p.add_argument(
        "--appearance",
        default="fixed",
        choices=APPEARANCES,
        help="one contrast table (fixed, the default) or contrast and bias strength drawn per case (randomised)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(cases, CPUs))")
    args = p.parse_args(argv)
    try:
        cfg = SyntheticConfig(args.cases, args.seed, args.depth, args.gz, tuple(args.quirks), args.appearance)
    except ValueError as exc:
        p.error(str(exc))
    t0 = time.perf_counter()
    out = generate_dataset(args.out, cfg, workers=args.workers)
    dt = time.perf_counter() - t0
    print(f"synthetic BraTS-layout dataset: {out} ({cfg.cases} cases, depth {cfg.depth}) in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
