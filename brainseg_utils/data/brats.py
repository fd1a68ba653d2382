"""BraTS 2020 case discovery, validation and loading.

Works the same on the real dataset (Kaggle input, Colab/Drive, any folder) and on the
synthetic one, because both use the BraTS 2020 layout::

    <root>/.../BraTS20_Training_NNN/BraTS20_Training_NNN_{flair,t1,t1ce,t2,seg}.nii[.gz]
    <root>/.../BraTS20_Validation_NNN/BraTS20_Validation_NNN_{flair,t1,t1ce,t2}.nii[.gz]  (no seg)

Known quirk handled by look-up, never by renaming (Kaggle input is read-only): case 355's
label file is ``W39_1998.09.19_Segm.nii``.

Normalisation (``normalise_volume``): per volume, over brain voxels (voxels != 0; BraTS is
skull-stripped with background exactly 0), intensities are clipped to the 0.5th and 99.5th
percentiles and linearly rescaled to [0, 1]; background stays 0.

Binary target: whole tumour (WT) = seg > 0 = labels {1, 2, 4}. FLAIR alone supports WT.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.runtime.io import atomic_write

log = logging.getLogger(__name__)

MODALITIES = ("flair", "t1", "t1ce", "t2")
VALID_LABELS = frozenset({0, 1, 2, 4})
CASE_RE = re.compile(r"^BraTS20_(Training|Validation)_(\d{3})$")
NIFTI_EXTS = (".nii", ".nii.gz")
# Label files published under another name; looked up when {case}_seg is absent.
SEG_ALIASES = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}
# Where the dataset lives on hosted notebooks (first match wins).
KNOWN_ROOTS = (
    "/kaggle/input/brats20-dataset-training-validation/BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData",
    "/kaggle/input/brats2020-training-data/MICCAI_BraTS2020_TrainingData",
    "/content/drive/MyDrive/BraTS2020/MICCAI_BraTS2020_TrainingData",
    "/content/drive/MyDrive/BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData",
    "/content/drive/MyDrive/MICCAI_BraTS2020_TrainingData",
    "/content/BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData",
    "/content/MICCAI_BraTS2020_TrainingData",
)
AFFINE_ATOL = 1e-3  # mm; real BraTS affines agree exactly across modalities


class CaseValidationError(ValueError):
    """A case breaks the BraTS contract. Names the file, what was expected and what was found."""

    def __init__(self, case_id: str, path: str | os.PathLike | None, expected: str, found: str):
        self.case_id, self.path, self.expected, self.found = case_id, str(path) if path else None, expected, found
        where = f" ({path})" if path else ""
        super().__init__(f"{case_id}{where}: expected {expected}, found {found}")


@dataclass
class Case:
    """One patient folder. ``seg`` is None for validation-set cases (no labels)."""

    case_id: str
    folder: Path
    images: dict[str, Path | None]
    seg: Path | None
    subset: str = "Training"  # "Training" or "Validation"

    @property
    def labelled(self) -> bool:
        return self.seg is not None

    def files(self) -> list[Path]:
        return [p for p in [*self.images.values(), self.seg] if p is not None]


@dataclass
class CaseReport:
    """What validation found in a case (one row of the audit table)."""

    case_id: str
    shape: tuple[int, ...]
    dtypes: dict[str, str]
    labels: list[int]
    brain_voxels: int
    tumour_voxels: int
    voxel_mm: tuple[float, ...] = field(default=(1.0, 1.0, 1.0))


# ----------------------------------------------------------------------------- discovery
def find_brats_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The BraTS training root: ``explicit`` (or $DATA_ROOT) if given, else a known hosted path.

    An explicit path that does not exist is an error; with none given, returns None when no
    known location holds cases (callers then fall back to the synthetic dataset).
    """
    explicit = explicit or os.environ.get("DATA_ROOT") or None
    if explicit:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"DATA_ROOT {root} does not exist or is not a folder")
        if not discover_cases(root):
            raise FileNotFoundError(f"DATA_ROOT {root} holds no BraTS20_Training_NNN / BraTS20_Validation_NNN folders")
        return root
    for cand in KNOWN_ROOTS:
        if Path(cand).is_dir() and discover_cases(cand):
            return Path(cand)
    kaggle = Path("/kaggle/input")
    if kaggle.is_dir():  # a differently named Kaggle dataset with the same inner layout
        for cand in sorted(kaggle.glob("*/**/MICCAI_BraTS2020_TrainingData")):
            if discover_cases(cand):
                return cand
    return None


def _nifti(folder: Path, stem: str) -> Path | None:
    """``stem.nii`` or ``stem.nii.gz`` in ``folder``; ``.nii`` wins when both exist (logged)."""
    found = [folder / f"{stem}{ext}" for ext in NIFTI_EXTS if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        log.warning("%s: both %s and %s exist; using %s", folder.name, found[0].name, found[1].name, found[0].name)
    return found[0] if found else None


def _find_seg(folder: Path, case_id: str) -> Path | None:
    seg = _nifti(folder, f"{case_id}_seg")
    if seg is None and case_id in SEG_ALIASES and (folder / SEG_ALIASES[case_id]).is_file():
        seg = folder / SEG_ALIASES[case_id]
    if seg is None:  # any other *_Segm.nii[.gz] alias the release may carry
        alias = sorted(p for p in folder.iterdir() if re.search(r"_segm\.nii(\.gz)?$", p.name, re.I))
        seg = alias[0] if alias else None
    return seg


def discover_cases(root: str | os.PathLike, max_depth: int = 4) -> list[Case]:
    """Every BraTS case folder under ``root`` (the root itself, flat, or nested Kaggle-style).

    Training and validation cases are both returned; validation cases (and any case without a
    label file) have ``seg=None`` and are kept out of training by ``labelled_cases``.
    Sorted by case id. Missing modality files are recorded as None and reported by
    ``validate_case``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    cases: dict[str, Case] = {}
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        m = CASE_RE.match(folder.name)
        if m:
            cid = folder.name
            images = {mod: _nifti(folder, f"{cid}_{mod}") for mod in MODALITIES}
            seg = _find_seg(folder, cid) if m.group(1) == "Training" else None
            if cid in cases:
                raise CaseValidationError(cid, folder, "one folder per case", f"a second copy at {cases[cid].folder}")
            cases[cid] = Case(cid, folder, images, seg, m.group(1))
            continue
        if depth < max_depth:
            try:
                subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            except PermissionError:
                continue
            stack.extend((p, depth + 1) for p in subdirs)
    return [cases[k] for k in sorted(cases)]


def labelled_cases(cases: list[Case]) -> list[Case]:
    """Cases with a label file (training set); validation-set cases are dropped, with a log line."""
    out = [c for c in cases if c.labelled]
    if len(out) < len(cases):
        log.info(
            "kept %d labelled cases; %d without a seg file (validation set) are not used for training",
            len(out),
            len(cases) - len(out),
        )
    return out


# ----------------------------------------------------------------------------- validation
def _header(case: Case, path: Path):
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise CaseValidationError(
            case.case_id, path, "a readable NIfTI-1 file", f"{type(exc).__name__}: {exc}"
        ) from exc


def _check_geometry(case: Case) -> tuple[tuple[int, ...], np.ndarray, dict]:
    """Header-only checks: every file present, 3-D, same shape and affine. Returns (shape, affine, imgs)."""
    required = dict(case.images)
    if case.subset == "Training":
        required["seg"] = case.seg
    missing = [k for k, p in required.items() if p is None]
    if missing:
        expected = ", ".join(f"{case.case_id}_{k}.nii[.gz]" for k in missing)
        raise CaseValidationError(case.case_id, case.folder, f"files {expected}", "no such file")
    imgs = {k: _header(case, p) for k, p in required.items()}
    ref_key = "flair"
    ref = imgs[ref_key]
    if len(ref.shape) != 3:
        raise CaseValidationError(case.case_id, required[ref_key], "a 3-D volume", f"shape {ref.shape}")
    for k, img in imgs.items():
        if img.shape != ref.shape:
            raise CaseValidationError(
                case.case_id, required[k], f"shape {ref.shape} (as {ref_key})", f"shape {img.shape}"
            )
        if not np.allclose(img.affine, ref.affine, atol=AFFINE_ATOL):
            raise CaseValidationError(
                case.case_id, required[k], f"the affine of {ref_key}\n{ref.affine}", f"\n{img.affine}"
            )
    return ref.shape, ref.affine, imgs


def _check_image(case: Case, key: str, path: Path, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise CaseValidationError(case.case_id, path, "finite intensities", f"{n} NaN/inf voxels")
    if not (data != 0).any():
        raise CaseValidationError(case.case_id, path, "a non-empty brain (voxels != 0)", "an all-zero volume")


def _check_seg(case: Case, seg: np.ndarray) -> None:
    labels = set(np.unique(seg).tolist())
    if not labels <= VALID_LABELS:
        raise CaseValidationError(
            case.case_id, case.seg, f"labels within {sorted(VALID_LABELS)}", f"labels {sorted(labels)}"
        )


def _data_bytes(img) -> tuple[int, int]:
    """(vox_offset, bytes of voxel data the header declares)."""
    hdr = img.header
    n = int(np.prod(hdr.get_data_shape(), dtype=np.int64))
    # the image's header copy has vox_offset reset to 0; the proxy keeps the file's offset
    offset = int(getattr(img.dataobj, "offset", hdr.get_data_offset()))
    return offset, n * hdr.get_data_dtype().itemsize


def _decompressed_size(path: Path) -> int:
    """Bytes a (possibly truncated or damaged) gzip stream yields before it ends or fails."""
    got = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                got += len(block)
    except (OSError, EOFError, zlib.error):
        pass
    return got


def _read(case: Case, path: Path, img) -> np.ndarray:
    """The voxel data in its on-disk dtype; a truncated or damaged file raises ``CaseValidationError``
    naming the file and the bytes expected vs found."""
    offset, need = _data_bytes(img)
    expected = f"{need:,} bytes of voxel data ({'x'.join(map(str, img.shape))} x {img.get_data_dtype()})"
    gz = str(path).endswith(".gz")
    if not gz:
        have = Path(path).stat().st_size - offset
        if have < need:
            raise CaseValidationError(case.case_id, path, expected, f"{max(have, 0):,} bytes (the file is truncated)")
    try:
        # dataobj keeps the on-disk dtype and skips nibabel's float64 cache.
        return np.asarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        found = (
            f"{max(_decompressed_size(path) - offset, 0):,} bytes before the compressed stream ends or breaks"
            if gz
            else "unreadable data"
        )
        raise CaseValidationError(
            case.case_id, path, expected, f"{found} (truncated or damaged: {type(exc).__name__}: {exc})"
        ) from exc


def validate_case(case: Case) -> CaseReport:
    """Full check of one case; raises ``CaseValidationError`` on the first problem.

    Checks: all files present; readable; 3-D; same shape and affine across modalities and
    seg; finite intensities; non-empty brain; labels within {0, 1, 2, 4}.
    """
    shape, _, imgs = _check_geometry(case)
    dtypes, brain = {}, 0
    for k in MODALITIES:
        data = _read(case, case.images[k], imgs[k])
        dtypes[k] = str(data.dtype)
        _check_image(case, k, case.images[k], data)
        if k == "flair":
            brain = int((data != 0).sum())
    labels, tumour = [], 0
    if case.seg is not None:
        seg = _read(case, case.seg, imgs["seg"])
        _check_seg(case, seg)
        dtypes["seg"] = str(seg.dtype)
        labels = sorted(int(v) for v in np.unique(seg))
        tumour = int((seg > 0).sum())
    zooms = tuple(float(z) for z in imgs["flair"].header.get_zooms()[:3])
    return CaseReport(case.case_id, tuple(shape), dtypes, labels, brain, tumour, zooms)


def audit_cases(
    cases: list[Case], skip_bad: bool = False, progress: bool = True
) -> tuple[list[Case], list[CaseReport], list[dict]]:
    """Validate every case. Returns (good cases, their reports, skipped [{case_id, path, reason}]).

    With ``skip_bad=False`` the first bad case raises; with ``True`` bad cases are skipped and
    counted in the log.
    """
    from tqdm.auto import tqdm

    good, reports, skipped = [], [], []
    for case in tqdm(cases, desc="validating cases", disable=not progress):
        try:
            reports.append(validate_case(case))
            good.append(case)
        except CaseValidationError as exc:
            if not skip_bad:
                raise
            skipped.append({"case_id": case.case_id, "path": exc.path, "reason": str(exc)})
    if skipped:
        log.warning(
            "skipped %d of %d cases that failed validation: %s",
            len(skipped),
            len(cases),
            ", ".join(s["case_id"] for s in skipped),
        )
    return good, reports, skipped


def audit_frame(reports: list[CaseReport], skipped: list[dict] | None = None):
    """One row per case: status, shape, dtypes, labels, brain and tumour volume (mL)."""
    import pandas as pd

    rows = []
    for r in reports:
        ml = float(np.prod(r.voxel_mm)) / 1000.0
        rows.append(
            {
                "case_id": r.case_id,
                "status": "ok",
                "shape": "x".join(map(str, r.shape)),
                "image_dtype": r.dtypes.get("flair", ""),
                "labels": " ".join(map(str, r.labels)) or "(none)",
                "brain_ml": round(r.brain_voxels * ml, 1),
                "tumour_ml": round(r.tumour_voxels * ml, 2),
                "reason": "",
            }
        )
    for s in skipped or []:
        rows.append({"case_id": s["case_id"], "status": "skipped", "reason": s["reason"]})
    cols = ["case_id", "status", "shape", "image_dtype", "labels", "brain_ml", "tumour_ml", "reason"]
    return pd.DataFrame(rows, columns=cols).sort_values("case_id", ignore_index=True)


# ----------------------------------------------------------------------------- loading
_CHUNK = 1 << 20  # voxels per step of the in-place rescale (bounded float64 temporaries)


def normalise_volume(vol: np.ndarray, lower_pct: float = 0.5, upper_pct: float = 99.5, copy: bool = True) -> np.ndarray:
    """float32 in [0, 1]: clip brain voxels (!= 0) to their [lower, upper] percentiles, rescale; background 0.

    ``copy=False`` with a writeable float32 array normalises it in place (the upload path): the peak
    extra memory is a bool brain mask (0.25 x) and the brain values for the percentiles (<= 1 x the
    float32 volume), plus fixed-size chunks; the arithmetic (float64 per chunk, one rounding to
    float32) gives the same values as the copying path.
    """
    if (
        copy
        or vol.dtype != np.float32
        or not vol.flags.writeable
        or not (vol.flags.c_contiguous or vol.flags.f_contiguous)
    ):
        vol = np.array(vol, dtype=np.float32, copy=True)
    flat = vol.ravel(order="K")  # a view of a contiguous array (C or Fortran order)
    brain = flat != 0
    if not brain.any():
        return vol  # all zeros already
    vals = flat[brain]
    lo, hi = np.percentile(vals, [lower_pct, upper_pct], overwrite_input=True)
    del vals
    scale = max(float(hi - lo), 1e-6)
    for i in range(0, flat.size, _CHUNK):
        v, b = flat[i : i + _CHUNK], brain[i : i + _CHUNK]
        v[b] = np.clip((v[b] - lo) / scale, 0.0, 1.0)
    return vol


def load_case(case: Case, modalities: tuple[str, ...] = ("flair",)) -> dict:
    """Validated, normalised arrays of one case.

    Returns ``{"image": float32 (C, H, W, D) in [0, 1], "wt": uint8 (H, W, D) in {0, 1} or None,
    "brain": bool (H, W, D), "affine": float64 (4, 4)}``; channel order follows ``modalities``.
    Geometry of every file is checked from headers; data checks run on what is loaded.
    """
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
    shape, affine, imgs = _check_geometry(case)
    chans, brain = [], np.zeros(shape, bool)
    for m in modalities:
        data = _read(case, case.images[m], imgs[m])
        _check_image(case, m, case.images[m], data)
        brain |= data != 0
        chans.append(normalise_volume(data))
    wt = None
    if case.seg is not None:
        seg = _read(case, case.seg, imgs["seg"])
        _check_seg(case, seg)
        wt = (seg > 0).astype(np.uint8)
    return {"image": np.stack(chans), "wt": wt, "brain": brain, "affine": np.asarray(affine, np.float64)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brainseg_utils.data.brats")
    p.add_argument("--find", action="store_true", help="print the BraTS training root, exit 1 if none is found")
    p.add_argument("--root", default=None, help="explicit data root (default: $DATA_ROOT, then known hosted paths)")
    args = p.parse_args(argv)
    if args.find:
        try:
            root = find_brats_root(args.root)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if root is None:
            return 1
        print(root)
        return 0
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def save_mask(mask: np.ndarray, affine: np.ndarray, header, path: str | os.PathLike) -> Path:
    """Write a binary mask as a uint8 NIfTI (1 = whole tumour) with the given affine and header, atomically.

    The header's data type and scaling are reset (uint8, slope 1, intercept 0): nibabel would otherwise
    keep the source image's dtype and scaling."""

    img = nib.Nifti1Image(np.asarray(mask).astype(np.uint8), affine, header)
    img.set_data_dtype(np.uint8)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=".nii.gz")


def best_slice(seg: np.ndarray) -> int:
    """Axial index (last axis) with the largest tumour area (the middle slice when there is no tumour)."""
    area = (np.asarray(seg) > 0).reshape(-1, seg.shape[2]).sum(0)
    return int(area.argmax()) if area.any() else seg.shape[2] // 2
