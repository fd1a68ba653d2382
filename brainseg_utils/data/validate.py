"""Validation of a BraTS case against the dataset's contract, and the audit table over many cases.

``validate_case`` reads every file of a case and raises ``CaseValidationError`` (``brats.py``) on the
first problem, naming the file, what was expected and what was found: a missing file, an unreadable or
truncated NIfTI, a shape or affine that differs between modalities, NaN/inf intensities, an all-zero
brain, a label outside {0, 1, 2, 4}. ``volumes.load_case`` runs the same checks on what it loads.
``audit_cases`` / ``audit_frame``: one ``CaseReport`` per case, bad cases optionally skipped.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.brats import MODALITIES, Case, CaseValidationError

log = logging.getLogger(__name__)

VALID_LABELS = frozenset({0, 1, 2, 4})
AFFINE_ATOL = 1e-3  # mm; real BraTS affines agree exactly across modalities


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


def _header(case: Case, path: Path):
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise CaseValidationError(
            case.case_id, path, "a readable NIfTI-1 file", f"{type(exc).__name__}: {exc}"
        ) from exc


def check_geometry(case: Case) -> tuple[tuple[int, ...], np.ndarray, dict]:
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


def check_image(case: Case, key: str, path: Path, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise CaseValidationError(case.case_id, path, "finite intensities", f"{n} NaN/inf voxels")
    if not (data != 0).any():
        raise CaseValidationError(case.case_id, path, "a non-empty brain (voxels != 0)", "an all-zero volume")


def check_seg(case: Case, seg: np.ndarray) -> None:
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


def read_voxels(case: Case, path: Path, img) -> np.ndarray:
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
    shape, _, imgs = check_geometry(case)
    dtypes, brain = {}, 0
    for k in MODALITIES:
        data = read_voxels(case, case.images[k], imgs[k])
        dtypes[k] = str(data.dtype)
        check_image(case, k, case.images[k], data)
        if k == "flair":
            brain = int((data != 0).sum())
    labels, tumour = [], 0
    if case.seg is not None:
        seg = read_voxels(case, case.seg, imgs["seg"])
        check_seg(case, seg)
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
    from brainseg_utils.runtime.progress import tqdm

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
