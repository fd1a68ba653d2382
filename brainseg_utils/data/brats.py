"""BraTS 2020 case discovery: the folder layout, ``Case``, finding the dataset root, and the ``--find`` CLI.

Works the same on the real dataset (Kaggle input, Colab/Drive, any folder) and on the
synthetic one, because both use the BraTS 2020 layout::

    <root>/.../BraTS20_Training_NNN/BraTS20_Training_NNN_{flair,t1,t1ce,t2,seg}.nii[.gz]
    <root>/.../BraTS20_Validation_NNN/BraTS20_Validation_NNN_{flair,t1,t1ce,t2}.nii[.gz]  (no seg)

Known quirk handled by look-up, never by renaming (Kaggle input is read-only): case 355's
label file is ``W39_1998.09.19_Segm.nii``.

Checking a case's files is ``validate.py``; reading and normalising its volumes is ``volumes.py``.

CLI: ``python -m brainseg_utils.data.brats --find [--root R]`` prints the training root; exit 0 when
found, 1 when none is found, 2 when an explicit root is wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODALITIES = ("flair", "t1", "t1ce", "t2")
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
    ``validate.validate_case``.
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
