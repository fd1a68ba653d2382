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

How a case is drawn (anatomy, tumours, contrast, the ``appearance`` option) is ``phantom.py``; this
module seeds it per case, plants the quirks and writes the files.

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

from brainseg_utils.data.brats import MODALITIES
from brainseg_utils.data.phantom import draw_case
from brainseg_utils.runtime.io import atomic_write, atomic_write_json

DEFAULT_DEPTH = 155
ALIAS_355 = "W39_1998.09.19_Segm.nii"
KNOWN_QUIRKS = ("alias355", "gz", "float32")
MARKER = "SYNTHETIC.json"
MAPPING = "name_mapping.csv"  # written last but one (before MARKER), as BraTS ships it
# Bumped whenever the same config draws different volumes; a dataset written by another version is regenerated.
# 2: anatomy from skull base to vertex, normal FLAIR hyperintensities, BraTS-range tumours, per-case contrast.
# 3: edema rendered over the tissue it replaced, with its labelled margin visible (1.12-1.3x that tissue on FLAIR).
# 4: larger main tumours (core radius log-normal around 12.5 mm instead of 10: whole tumour median ~50 mL, was 33).
GENERATOR_VERSION = 4
# BraTS 2020 files carry this LPS-like affine (1 mm voxels, y flipped with origin at 239).
BRATS_AFFINE = np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
APPEARANCES = ("fixed", "randomised")
APPEARANCE_STREAM = 7  # third element of the appearance generator's seed (anatomy and tumours: [seed, i])


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


def generate_case(cfg: SyntheticConfig, index: int) -> dict:
    """Arrays of case ``index``: ``{modality: float32 volume, "seg": uint8 labels, "meta": {...}}``."""
    rng = np.random.default_rng([cfg.seed, index])
    look = np.random.default_rng([cfg.seed, index, APPEARANCE_STREAM])
    return draw_case(rng, cfg.depth, look, wide=cfg.appearance == "randomised")


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
        record = json.loads(marker.read_text())
        stored, version = record["config"], record.get("generator_version", 1)
    except (ValueError, KeyError, TypeError):
        return False
    if version != GENERATOR_VERSION:
        return False  # an earlier generator drew other volumes for the same config
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
        and not all(p.name.startswith(("BraTS20_Training_", ".tmp-")) or p.name == MAPPING for p in out.iterdir())
    ):
        raise FileExistsError(f"{out} exists and is not a synthetic dataset folder; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)  # first: an interrupted regeneration is then recognised as ours
    (out / MAPPING).unlink(missing_ok=True)
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
            "generator_version": GENERATOR_VERSION,
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

    atomic_write(out / MAPPING, _write)


def _progress(total: int, desc: str, enabled: bool):
    from brainseg_utils.runtime.progress import tqdm

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
        help="contrast drawn per case within clinical FLAIR ranges (fixed, the default) or wider ranges (randomised)",
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
