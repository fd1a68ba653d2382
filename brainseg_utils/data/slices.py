"""2-D axial slices: selection, on-disk slice cache, patient-level split.

Slice selection per case (``select_slices``):
  * every axial slice whose whole-tumour area is >= ``min_tumour_pixels`` (at source resolution),
    taken every ``slice_step``-th;
  * plus ``tumour_free_fraction`` x (number of tumour slices) tumour-free *brain* slices
    (brain area >= ``min_brain_pixels``), drawn with a seeded RNG. They are what makes
    false-positive evaluation honest: a model only ever shown tumours learns to always
    predict one.

Cache layout (``cache_dir``)::

    images.f16   raw float16 (N, C, S, S) in [0, 1]   (np.memmap; shape in the manifest)
    masks.u8     raw uint8   (N, S, S) in {0, 1}       whole tumour
    index.csv    row, case_id, z, tumour_px, brain_px (areas at source resolution), has_tumour (cached mask)
    manifest.json  parameters + fingerprint of every input file + sha256 key

The cache is reused when the key (parameters + input fingerprints) matches, and rebuilt in
a temporary folder that replaces the old one only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from brainseg_utils.data.brats import Case
from brainseg_utils.data.strata import read_grades, strata_counts, stratified_order
from brainseg_utils.data.volumes import load_case
from brainseg_utils.runtime.io import atomic_write_json, canonical_sha256, file_fingerprint

CACHE_VERSION = 3  # 2: has_tumour follows the resized mask; 3: masks resized like images (no offset)


@dataclass(frozen=True)
class SliceConfig:
    """Parameters that define a slice cache (part of its key)."""

    img_size: int = 240
    modalities: tuple[str, ...] = ("flair",)
    tumour_free_fraction: float = 0.3
    min_tumour_pixels: int = 1
    min_brain_pixels: int = 1500
    slice_step: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 32 <= self.img_size <= 1024:
            raise ValueError(f"img_size must be in [32, 1024], got {self.img_size}")
        if not 0.0 <= self.tumour_free_fraction <= 10.0:
            raise ValueError(f"tumour_free_fraction must be in [0, 10], got {self.tumour_free_fraction}")
        if self.slice_step < 1:
            raise ValueError(f"slice_step must be >= 1, got {self.slice_step}")
        object.__setattr__(self, "modalities", tuple(self.modalities))


def select_slices(wt: np.ndarray, brain: np.ndarray, cfg: SliceConfig, case_id: str) -> list[int]:
    """Axial indices to keep for one case (sorted). ``wt``/``brain``: (H, W, D)."""
    tumour_px = wt.reshape(-1, wt.shape[2]).sum(0)
    brain_px = brain.reshape(-1, brain.shape[2]).sum(0)
    tumour_z = np.flatnonzero(tumour_px >= cfg.min_tumour_pixels)[:: cfg.slice_step]
    free_z = np.flatnonzero((tumour_px == 0) & (brain_px >= cfg.min_brain_pixels))
    n_free = min(len(free_z), int(round(cfg.tumour_free_fraction * len(tumour_z))))
    # Seeded per case so adding or removing other cases does not change this one's choice.
    rng = np.random.default_rng([cfg.seed, int(canonical_sha256(case_id)[:8], 16)])
    chosen_free = rng.choice(free_z, size=n_free, replace=False) if n_free else np.array([], int)
    return sorted(int(z) for z in np.concatenate([tumour_z, chosen_free]))


def square_padding(h: int, w: int) -> tuple[int, int, int]:
    """(side, top, left): an (h, w) slice is zero-padded, centred, to a side x side square (top/left pads;
    the larger half of an odd pad goes to the bottom/right). ``resize_slice`` pads this way, and
    ``grid.to_native`` and the demo's box mapping undo it."""
    side = max(h, w)
    return side, (side - h) // 2, (side - w) // 2


def box_to_cache(box, h: int, w: int, size: int) -> np.ndarray:
    """XYXY box in an (h, w) slice -> the same box in the ``size`` x ``size`` cache frame (pad, then scale)."""
    side, top, left = square_padding(h, w)
    scale = size / side
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + left) * scale, (y0 + top) * scale, (x1 + left) * scale, (y1 + top) * scale], np.float32)


def resize_slice(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to square (centred, zeros) then resize to ``size``.

    ``img``: float32 (C, H, W); ``mask``: uint8 (H, W) in {0, 1}. Returns float32 (C, size, size) and
    uint8 (size, size) in {0, 1}.

    Image and mask go through the same, pixel-centre-aligned interpolation (area when shrinking,
    bilinear when enlarging); the mask is resized as float and thresholded at 0.5, so it stays
    binary and keeps its position. (Nearest neighbour, as OpenCV implements it, picks source pixel
    ``floor(x * scale)`` without the half-pixel centre and shifts a shrunk mask by up to one source
    pixel down-right relative to the image; ``to_native`` in evaluation maps back with the same
    centre-aligned convention.)
    """
    c, h, w = img.shape
    side, top, left = square_padding(h, w)
    if (h, w) != (side, side):
        pads = ((top, side - h - top), (left, side - w - left))
        img = np.pad(img, ((0, 0), *pads))
        mask = np.pad(mask, pads)
    if side != size:
        interp = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
        img = np.stack([cv2.resize(ch, (size, size), interpolation=interp) for ch in img])
        soft = cv2.resize(np.asarray(mask, np.float32), (size, size), interpolation=interp)
        mask = (soft >= 0.5).astype(np.uint8)
    return img, np.asarray(mask, np.uint8)


def cache_key(cases: list[Case], cfg: SliceConfig) -> tuple[str, dict]:
    """sha256 over parameters + every input file's fingerprint (name, size, mtime)."""
    inputs = {c.case_id: [file_fingerprint(p) for p in (*(c.images[m] for m in cfg.modalities), c.seg)] for c in cases}
    payload = {"version": CACHE_VERSION, "config": asdict(cfg), "inputs": inputs}
    return canonical_sha256(payload), payload


@dataclass
class SliceCache:
    """A built cache, opened read-only (memory-mapped)."""

    root: Path
    images: np.ndarray  # float16 (N, C, S, S)
    masks: np.ndarray  # uint8 (N, S, S)
    index: pd.DataFrame
    manifest: dict

    @classmethod
    def open(cls, root: str | os.PathLike) -> SliceCache:
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"no slice cache at {root} (missing manifest.json); build it with build_cache()")
        manifest = json.loads(manifest_path.read_text())
        n, c, size, _ = manifest["shape"]
        images = np.memmap(root / "images.f16", np.float16, "r", shape=(n, c, size, size))
        masks = np.memmap(root / "masks.u8", np.uint8, "r", shape=(n, size, size))
        index = pd.read_csv(root / "index.csv")
        if not (len(images) == len(masks) == len(index) == manifest["n_slices"]):
            raise ValueError(
                f"slice cache {root} is inconsistent: images {len(images)}, masks {len(masks)}, "
                f"index {len(index)}, manifest {manifest['n_slices']} rows; delete it to rebuild"
            )
        return cls(root, images, masks, index, manifest)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    def __len__(self) -> int:
        return len(self.index)

    def rows_for(self, case_ids) -> np.ndarray:
        """Row numbers of every slice of the given cases, in cache order."""
        return np.flatnonzero(self.index["case_id"].isin(set(case_ids)).to_numpy())


def _write_slices(cases: list[Case], cfg: SliceConfig, folder: Path, progress: bool) -> list[dict]:
    """Append the selected slices of every case to ``folder``/images.f16 and masks.u8 (fsynced); one index
    row per slice: case_id, z, tumour_px, brain_px (source resolution), has_tumour (cached mask)."""
    from brainseg_utils.runtime.progress import tqdm

    # Slices are appended to raw files case by case: one volume in memory at a time,
    # whatever the dataset size (full BraTS is several GB of slices).
    rows = []
    with open(folder / "images.f16", "wb") as f_img, open(folder / "masks.u8", "wb") as f_mask:
        for case in tqdm(cases, desc="slice cache", disable=not progress):
            vol = load_case(case, cfg.modalities)
            wt, brain = vol["wt"], vol["brain"]
            for z in select_slices(wt, brain, cfg, case.case_id):
                img, mask = resize_slice(vol["image"][..., z], wt[..., z], cfg.img_size)
                f_img.write(np.ascontiguousarray(img, np.float16).tobytes())
                f_mask.write(np.ascontiguousarray(mask, np.uint8).tobytes())
                # has_tumour describes the cached (resized) mask, what models see; a tumour of a
                # few pixels can vanish when slices are shrunk. tumour_px is at source resolution.
                rows.append(
                    {
                        "case_id": case.case_id,
                        "z": z,
                        "tumour_px": int(wt[..., z].sum()),
                        "brain_px": int(brain[..., z].sum()),
                        "has_tumour": bool(mask.any()),
                    }
                )
        f_img.flush()
        f_mask.flush()
        os.fsync(f_img.fileno())
        os.fsync(f_mask.fileno())
    return rows


def _swap_in(tmp: Path, cache_dir: Path) -> None:
    """Replace ``cache_dir`` (if any) with the complete cache in ``tmp``; the old one is deleted after."""
    old = cache_dir.with_name(f".{cache_dir.name}.old-{os.getpid()}")
    if cache_dir.exists():
        os.replace(cache_dir, old)
    os.replace(tmp, cache_dir)
    shutil.rmtree(old, ignore_errors=True)


def build_cache(
    cases: list[Case],
    cache_dir: str | os.PathLike,
    cfg: SliceConfig | None = None,
    progress: bool = True,
    force: bool = False,
) -> SliceCache:
    """Build (or reuse) the slice cache for labelled ``cases``.

    Reused when ``manifest.json`` carries the same key; otherwise built into a temporary
    sibling folder and swapped in only once complete, so no reader ever sees half a cache.
    """
    cfg = cfg or SliceConfig()
    cache_dir = Path(cache_dir)
    unlabelled = [c.case_id for c in cases if not c.labelled]
    if unlabelled:
        raise ValueError(f"slice cache needs labelled cases; these have no seg file: {unlabelled[:5]}")
    if not cases:
        raise ValueError("slice cache needs at least one case; none were given")
    key, payload = cache_key(cases, cfg)
    if not force and (cache_dir / "manifest.json").exists():
        try:
            cache = SliceCache.open(cache_dir)
            if cache.key == key:
                return cache
        except (ValueError, OSError, KeyError):
            pass  # unreadable or inconsistent: rebuild

    t0 = time.perf_counter()
    tmp = cache_dir.with_name(f".{cache_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = _write_slices(cases, cfg, tmp, progress)
        n, c, s = len(rows), len(cfg.modalities), cfg.img_size
        if n == 0:
            raise ValueError(
                f"no slices selected from {len(cases)} case(s) with {cfg}; check min_tumour_pixels / min_brain_pixels"
            )
        index = pd.DataFrame(rows, columns=["case_id", "z", "tumour_px", "brain_px", "has_tumour"])
        index.insert(0, "row", np.arange(n))
        index.to_csv(tmp / "index.csv", index=False)
        manifest = {
            "key": key,
            "n_slices": n,
            "n_cases": len(cases),
            "shape": [n, c, s, s],
            "n_tumour_slices": int(index["has_tumour"].sum()),
            "build_seconds": round(time.perf_counter() - t0, 2),
            **payload,
        }
        atomic_write_json(tmp / "manifest.json", manifest)  # written last: marks the cache complete
        _swap_in(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SliceCache.open(cache_dir)


# ----------------------------------------------------------------------------- split
SPLIT_NAMES = ("train", "val", "test")


def make_split(
    case_ids: list[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0, strata=None
) -> dict[str, list[str]]:
    """Patient-level split: each case id lands in exactly one of train / val / test.

    Deterministic for (sorted case ids, fractions, seed, strata). With >= 3 cases every part gets at
    least one case. ``strata`` ({case id: grade}, from name_mapping.csv): each part keeps every grade's share
    within about one case (``strata.stratified_order``), part sizes unchanged; None: the seeded permutation.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case_ids contains duplicates")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(ids) < 3:
        raise ValueError(f"a train/val/test split needs >= 3 cases, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids)) if not strata else stratified_order(ids, strata, seed)
    n = len(ids)
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} cases leave no training case with fractions {fractions}")
    shuffled = [ids[i] for i in order]
    parts = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {k: sorted(v) for k, v in parts.items()}


def split_sha256(split: dict) -> str:
    """Hash of the case lists only (what evaluation must agree on)."""
    return canonical_sha256({k: list(split[k]) for k in SPLIT_NAMES})


def write_split_once(
    path: str | os.PathLike, case_ids: list[str], fractions=(0.7, 0.15, 0.15), seed: int = 0, grades_from=None
) -> dict:
    """Create ``splits.json`` if absent; otherwise load it and check it covers exactly ``case_ids``.

    The file holds ``train``, ``val``, ``test``, ``seed``, ``fractions``, ``stratified`` and ``sha256``.
    ``grades_from``: a name_mapping.csv (or None): the split is stratified by its HGG / LGG grades and
    ``stratified`` records the file and the grade counts per part; null when not stratified. An
    existing split is never rewritten: a different case set is an error telling what to do.
    """
    path = Path(path)
    if path.exists():
        split = load_split(path)
        have = set().union(*(split[k] for k in SPLIT_NAMES))
        if have != set(case_ids):
            extra, missing = sorted(have - set(case_ids)), sorted(set(case_ids) - have)
            raise ValueError(
                f"{path} was written for other cases (only in split: {extra[:5]}, not in split: "
                f"{missing[:5]}); use another output folder or delete {path} to re-split "
                "(checkpoints trained on the old split then no longer match)"
            )
        return split
    grades = (read_grades(grades_from) or None) if grades_from else None
    split = make_split(case_ids, tuple(fractions), seed, grades)
    stratified = grades and {
        "by": "grade (HGG / LGG)",
        "source": str(grades_from),
        "counts": strata_counts(split, grades),
    }
    split.update({"seed": seed, "fractions": list(fractions), "stratified": stratified or None})
    split["sha256"] = split_sha256(split)
    atomic_write_json(path, split)
    return split


def load_split(path: str | os.PathLike) -> dict:
    """Read ``splits.json`` and verify its sha256 and that the parts are patient-disjoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; notebook 01 (or write_split_once) writes it")
    split = json.loads(path.read_text())
    missing = [k for k in (*SPLIT_NAMES, "sha256") if k not in split]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    if split_sha256(split) != split["sha256"]:
        raise ValueError(
            f"{path}: sha256 field {split['sha256'][:12]}… does not match its contents "
            f"({split_sha256(split)[:12]}…); the file was edited"
        )
    seen: dict[str, str] = {}
    for k in SPLIT_NAMES:
        for cid in split[k]:
            if cid in seen:
                raise ValueError(f"{path}: case {cid} is in both {seen[cid]} and {k}")
            seen[cid] = k
    return split


def split_summary(split: dict, index: pd.DataFrame) -> pd.DataFrame:
    """Cases, slices and tumour slices per split part (rows: train, val, test)."""
    rows = []
    for k in SPLIT_NAMES:
        part = index[index["case_id"].isin(set(split[k]))]
        rows.append(
            {
                "split": k,
                "cases": len(split[k]),
                "slices": len(part),
                "tumour_slices": int(part["has_tumour"].sum()),
                "tumour_free_slices": int((~part["has_tumour"].astype(bool)).sum()),
            }
        )
    return pd.DataFrame(rows).set_index("split")
