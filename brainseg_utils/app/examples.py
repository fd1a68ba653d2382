"""Example inputs for the demo, from a run's test split, with their ground truth.

``make_examples(run)`` / ``write_examples(cases, folder)`` write FLAIR PNG slices and one NIfTI volume (for a
U-Net that takes several modalities: 4-D NIfTI stacks of them instead, as a PNG holds one), each with its
ground truth beside it (whole tumour = labels {1, 2, 4}, in the example's own layout: ``*_truth.png`` for a
slice, a uint8 ``*_truth.nii.gz`` with the FLAIR's affine and header for the volume). ``Truths`` finds the
ground truth of a file the page or the API receives: by size and SHA-256 of its bytes, not by name (Gradio
copies examples under its own paths, and an upload named like an example is not that example).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.brats import Case, discover_cases
from brainseg_utils.data.volumes import best_slice, normalise_volume, save_mask
from brainseg_utils.runtime.io import atomic_write
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.prepare import ensure_run_data, run_split


def write_examples(
    cases: list[Case], folder: str | os.PathLike, n: int = 2, modalities: tuple[str, ...] = ("flair",)
) -> list[list]:
    """[file, slice, truth] rows: FLAIR PNG slices of the first ``n`` labelled cases at their largest-tumour
    slice (slice None: a 2-D image) and the first case's NIfTI volume at that slice (0-based index, as in the
    file, like the PNGs' ``_z<index>`` names); ``truth`` is the ground-truth file written beside each.
    Several ``modalities`` (the U-Net's input): the first ``n`` cases as 4-D NIfTI stacks of them, in that order."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = [c for c in cases if c.seg is not None]
    if len(modalities) > 1:
        return [_write_stack(case, folder, tuple(modalities)) for case in cases[:n]]
    rows = []
    for case in cases[:n]:
        wt = np.asarray(nib.load(case.seg).dataobj) > 0
        z = best_slice(wt)
        png, truth = folder / f"{case.case_id}_flair_z{z}.png", folder / f"{case.case_id}_flair_z{z}_truth.png"
        if not (png.exists() and truth.exists()):
            flair = normalise_volume(np.asarray(nib.load(case.images["flair"]).dataobj))
            Image.fromarray((np.rot90(flair[:, :, z]) * 255).astype(np.uint8)).save(png)
            Image.fromarray(np.rot90(wt[:, :, z]).astype(np.uint8) * 255).save(truth)
        rows.append([str(png), None, str(truth)])  # a 2-D image: no slice number
    if cases:
        case = cases[0]
        nii, truth = folder / f"{case.case_id}_flair.nii.gz", folder / f"{case.case_id}_truth.nii.gz"
        img = nib.load(case.images["flair"])
        wt = np.asarray(nib.load(case.seg).dataobj) > 0
        if not (nii.exists() and truth.exists()):
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), nii)
            save_mask(wt, img.affine, img.header, truth)
        rows.append([str(nii), best_slice(wt), str(truth)])
    return rows


def _write_stack(case: Case, folder: Path, modalities: tuple[str, ...]) -> list:
    """[file, slice, truth]: the case's ``modalities`` as one 4-D NIfTI (X, Y, Z, C; the first modality's affine
    and header, on-disk values kept), at its largest-tumour slice, and its ground truth beside it."""
    first = nib.load(case.images[modalities[0]])
    wt = np.asarray(nib.load(case.seg).dataobj) > 0
    nii = folder / f"{case.case_id}_{'_'.join(modalities)}.nii.gz"
    truth = folder / f"{case.case_id}_truth.nii.gz"
    if not (nii.exists() and truth.exists()):
        vols = [np.asarray(nib.load(case.images[m]).dataobj) for m in modalities]
        stack = np.stack(vols, axis=-1).astype(np.result_type(*vols), copy=False)
        header = first.header.copy()
        header.set_data_dtype(stack.dtype)
        img = nib.Nifti1Image(stack, first.affine, header)
        atomic_write(nii, lambda tmp: nib.save(img, tmp), suffix=".nii.gz")
        save_mask(wt, first.affine, first.header, truth)
    return [str(nii), best_slice(wt), str(truth)]


def unet_modalities(run: RunDir) -> tuple[str, ...]:
    """The modalities the run's U-Net was trained on (its checkpoint's record; FLAIR when none is recorded)."""
    from brainseg_utils.runtime.checkpoints import load_checkpoint

    if not run.unet_best.exists():
        return ("flair",)
    meta = load_checkpoint(run.unet_best, expect_arch="unet").get("meta", {})
    return tuple(meta.get("modalities") or ("flair",))


def make_examples(
    output_dir: str | os.PathLike = "outputs", n: int = 2, modalities: tuple[str, ...] | None = None
) -> list[list]:
    """``write_examples`` on the run's test split, under <run>/demo/examples, for the ``modalities`` of the run's
    U-Net (read from its checkpoint when not given).

    The split is read with its hash checked against the one notebook 01 recorded (``prepare.run_split``)."""
    run = RunDir(output_dir)
    modalities = tuple(modalities) if modalities else unet_modalities(run)
    split, info = run_split(run)
    if not Path(info["root"]).is_dir():  # a fresh VM: synthetic volumes went with /kaggle/temp or the VM
        ensure_run_data(run)
        split, info = run_split(run)
    cases = {c.case_id: c for c in discover_cases(info["root"])}
    return write_examples([cases[cid] for cid in split["test"] if cid in cases], run.demo_examples, n, modalities)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Truths:
    """The ground truth of example files: ``get(path)`` -> bool (H, W, D) in the layout of the upload's volume
    (D = 1 for a 2-D image), or None when ``path`` is not (byte for byte) one of the examples.

    ``rows``: [file, slice, truth] (rows without a truth, or of two elements, are skipped). A file is hashed only
    when its size equals an example's, so other uploads cost one ``stat``."""

    def __init__(self, rows=()):
        self._by_size: dict[int, dict[str, Path]] = {}
        for row in rows or ():
            if len(row) > 2 and row[2]:
                f = Path(row[0])
                self._by_size.setdefault(f.stat().st_size, {})[_sha256(f)] = Path(row[2])
        self._loaded: dict[Path, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_size.values())

    def get(self, path: str | os.PathLike | None) -> np.ndarray | None:
        if not path or not self._by_size:
            return None
        try:
            found = self._by_size.get(Path(path).stat().st_size)
            truth = found and found.get(_sha256(Path(path)))
        except OSError:
            return None
        if not truth:
            return None
        with self._lock:
            if truth not in self._loaded:
                self._loaded[truth] = load_truth(truth)
            return self._loaded[truth]


def load_truth(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth file written by ``write_examples`` -> bool (H, W, D) (D = 1 for a PNG)."""
    from PIL import Image

    path = Path(path)
    if path.suffix == ".png":
        with Image.open(path) as im:
            return (np.asarray(im.convert("L")) > 0)[:, :, None]
    arr = np.asarray(nib.load(path).dataobj) > 0
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D ground-truth volume, found shape {arr.shape}")
    return arr


def examples_table(results: list[dict]):
    """One row per example result (``request.segment`` with its ground truth): file, slice, ground-truth pixels,
    each model's pixels, Dice on that slice (both empty: 1; blank without a ground truth) and latency."""
    import pandas as pd

    rows = []
    for out in results:
        dice, res = out.get("dice") or {}, out["res"]
        rows.append(
            {
                "example": out["name"],
                "slice": out["z"] if out["depth"] > 1 else None,
                "truth_px": out.get("truth_px"),
                "unet_px": out["info"].get("unet"),
                "unet_dice": dice.get("unet"),
                "unet_ms": res["unet_ms"],
                "sam_px": out["info"].get("sam"),
                "sam_dice": dice.get("sam"),
                "sam_ms": res["sam_ms"],
            }
        )
    return pd.DataFrame(rows)
