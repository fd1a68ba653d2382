"""Example inputs for the demo: FLAIR PNG slices and one NIfTI volume from a run's test split."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg_utils.data.brats import discover_cases
from brainseg_utils.data.volumes import best_slice, normalise_volume
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.prepare import ensure_run_data, run_split


def make_examples(output_dir: str | os.PathLike = "outputs", n: int = 2) -> list[list]:
    """[file, slice] rows from the test split: FLAIR PNG slices (slice None) and one NIfTI volume with its
    slice of largest tumour (0-based index, as in the file, like the PNGs' ``_z<index>`` names), under
    <run>/demo/examples.

    The split is read with its hash checked against the one notebook 01 recorded (``prepare.run_split``)."""
    from PIL import Image

    run = RunDir(output_dir)
    split, info = run_split(run)
    if not Path(info["root"]).is_dir():  # a fresh VM: synthetic volumes went with /kaggle/temp or the VM
        ensure_run_data(run)
        split, info = run_split(run)
    cases = {c.case_id: c for c in discover_cases(info["root"])}
    folder = run.demo_examples
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for cid in split["test"][:n]:
        case = cases[cid]
        seg = np.asarray(nib.load(case.seg).dataobj)
        z = best_slice(seg)
        flair = normalise_volume(np.asarray(nib.load(case.images["flair"]).dataobj))
        png = folder / f"{cid}_flair_z{z}.png"
        if not png.exists():
            Image.fromarray((np.rot90(flair[:, :, z]) * 255).astype(np.uint8)).save(png)
        rows.append([str(png), None])  # a 2-D image: no slice number
    if split["test"]:
        case = cases[split["test"][0]]
        nii = folder / f"{case.case_id}_flair.nii.gz"
        if not nii.exists():
            img = nib.load(case.images["flair"])
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), nii)
        seg = np.asarray(nib.load(case.seg).dataobj)
        rows.append([str(nii), best_slice(seg)])
    return rows
