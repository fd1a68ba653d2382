""" "Segment the whole volume": the evaluated models on every brain slice of a NIfTI upload, 3-D NIfTI masks out.

``segment_volume`` is evaluation's own ``inference.predict_volume`` (same resizing, batching, ``to_native``,
3-D clean-up and U-Net -> SAM cascade as the reported numbers) on the uploaded volume:

  * the U-Net on every slice with any non-zero voxel; its 3-D clean-up (``unet_clean``) when the run chose one
    for this checkpoint (``unet/cleanup.json``);
  * the automatic cascade (``sam_<backend>_unet_box``: one box per component of the (cleaned) U-Net mask, masks
    united) when the run has a box decoder and its estimated time, the warm-up's per-slice SAM time x the brain
    slices, is within ``SAM_BUDGET_S``; otherwise it is skipped and the result says so;
  * each mask as a uint8 NIfTI with the upload's affine and header (``_all_slices_`` in the name), its volume
    in mL and its slices; with a test-split example's ground truth, each model's Dice on the whole volume.

Work is capped: volumes over ``MAX_VOXELS`` are refused with a plain message (a BraTS volume has 8.9 M; the peak
is about ``BYTES_PER_VOXEL`` per voxel beyond the upload), slices go through in batches of ``BATCH``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from brainseg_utils.app.predictor import Predictor
from brainseg_utils.app.request import REQUEST_PREFIX, new_token
from brainseg_utils.app.upload import UploadError, cached_upload
from brainseg_utils.data.volumes import save_mask
from brainseg_utils.evaluation.inference import Models, predict_volume
from brainseg_utils.evaluation.metrics import dice

MAX_VOXELS = 20_000_000  # whole-volume requests above this are refused (BraTS: 240 x 240 x 155 = 8.9 M)
BYTES_PER_VOXEL = 12  # measured order: brain mask, the models' masks, one float32 native-grid slice stack
BATCH = 8  # slices per forward pass (the U-Net is warmed up at this batch size)
SAM_BUDGET_S = 60.0  # the cascade runs when (brain slices x warm SAM ms per slice) stays within this


def volume_models(predictor: Predictor, n_slices: int) -> tuple[Models, str]:
    """What the whole volume runs: the U-Net (+ clean-up) and, when affordable, the cascade; and a note on SAM."""
    models = Models(predictor.unet, cleanup=predictor.cleanup)
    if predictor.sam_box is None or predictor.backend is None:
        return models, "no SAM box decoder in this run: U-Net only"
    per_slice_ms = predictor.warm_up()["sam_ms"] or 0.0
    estimate = n_slices * per_slice_ms / 1000
    if estimate > SAM_BUDGET_S:
        return models, (
            f"SAM skipped: about {estimate:.0f} s for {n_slices} slices at {per_slice_ms:.0f} ms each on this machine "
            f"(limit {SAM_BUDGET_S:.0f} s); U-Net only"
        )
    name = predictor.backend.name
    models.sam, models.backends = {name: {"box": predictor.sam_box}}, {name: predictor.backend}
    return models, ""


def segment_volume(predictor: Predictor, path: str, workdir: Path, truth=None, progress=None) -> dict:
    """The whole request. Raises ``UploadError`` for a 2-D image, a volume over ``MAX_VOXELS`` or no brain.

    ``truth``: bool (H, W, D) ground truth of a test-split example (``examples.Truths``) or None;
    ``progress(stage, done, total)`` after each batch of slices. Returns {"pred": {model: bool (H, W, D)},
    "stats": {model: {"voxels", "ml", "slices", "dice"}}, "files", "seconds", "n_slices", "sam_note", "name",
    "depth", "kind"}."""
    if not path:
        raise UploadError("upload a NIfTI volume first")
    up = cached_upload(path)
    depth = up.volume.shape[2]
    if up.kind != "nifti" or depth == 1:
        raise UploadError(f"{up.name} is a single slice: press Segment (the whole volume is for 3-D NIfTI files)")
    if up.volume.size > MAX_VOXELS:
        raise UploadError(
            f"{up.name}: {up.volume.size / 1e6:.1f} M voxels is over the whole-volume limit of "
            f"{MAX_VOXELS / 1e6:.0f} M (memory and time on this server); segment single slices instead"
        )
    if truth is not None and truth.shape != up.volume.shape:
        raise UploadError(f"{up.name}: its ground truth has shape {truth.shape}, the volume {up.volume.shape}")
    image = predictor.volume_input(up)  # refuses an upload without the U-Net's modalities
    brain = up.volume > 0
    n_slices = int(brain.reshape(-1, depth).any(0).sum())
    if n_slices == 0:
        raise UploadError(f"{up.name}: no slice has a non-zero voxel")
    models, sam_note = volume_models(predictor, n_slices)
    spacing = tuple(float(s) for s in up.header.get_zooms()[:3])
    t0 = time.perf_counter()
    out = predict_volume(
        models, image, brain, spacing, predictor.img_size, predictor.device, BATCH, progress=progress
    )  # no truth: the oracle variants stay out; Dice is taken below
    seconds = time.perf_counter() - t0
    del brain
    preds = out["pred"]
    folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=workdir))
    stem, token = Path(up.name).name.replace(".nii.gz", "").rsplit(".", 1)[0], new_token()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    files, stats = [], {}
    for name, vol in preds.items():
        nii = folder / f"{stem}_all_slices_{name}_mask_{token}.nii.gz"
        files.append(str(save_mask(vol, up.affine, up.header, nii)))
        n = int(vol.sum())
        stats[name] = {
            "voxels": n,
            "ml": n * voxel_ml,
            "slices": int(vol.reshape(-1, depth).any(0).sum()),
            "dice": None if truth is None else dice(vol, truth),
        }
    return {
        "pred": preds,
        "stats": stats,
        "files": files,
        "seconds": seconds,
        "n_slices": n_slices,
        "sam_note": sam_note,
        "name": up.name,
        "depth": depth,
        "kind": up.kind,
    }
