"""The fully automatic U-Net -> SAM cascade, and the U-Net's 3-D clean-up it starts from.

* ``clean_volume``: 3-D connected components of a predicted mask (26-connectivity, as the BraTS lesion-wise
  evaluation labels lesions), those smaller than ``min_volume_mm3`` removed. The threshold is chosen on the
  *validation* cases (``choose_min_volume``: the candidate with the best mean per-patient Dice of the cleaned
  U-Net; ties go to the smaller threshold), never on the test split, and stored in ``unet/cleanup.json``
  beside the checkpoint it was chosen for (``cleanup_for``). The cleaned mask is reported as its own model,
  ``unet_clean``.
* ``component_boxes``: one XYXY box per 2-D connected component (8-connectivity) of a slice of the cleaned
  mask, largest first, at most ``MAX_BOXES``; the SAM decoder runs once per box and the masks are united
  (``SamDecoderModel`` takes ``(B, K, 4)`` boxes, NaN rows for "no box"). A slice without any component gets
  no box and is predicted empty.
* ``validation_boxes``: the same boxes for the validation rows of the slice cache, from the U-Net's cleaned
  whole-volume predictions, so notebook 03 selects the box decoder's checkpoint on what the cascade will
  really give it (U-Net boxes), not on oracle boxes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from brainseg_utils.data.brats import Case, discover_cases
from brainseg_utils.data.slices import resize_slice
from brainseg_utils.data.volumes import load_case
from brainseg_utils.evaluation.grid import batched, to_cache_size, to_native
from brainseg_utils.runtime.io import atomic_write_json, file_sha256

STRUCTURE_3D = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
STRUCTURE_2D = ndimage.generate_binary_structure(2, 2)  # 8-connectivity
MAX_BOXES = 4  # boxes per slice (the largest components); more is rare and each costs a decoder run
MIN_VOLUME_CANDIDATES_MM3 = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0)


def clean_volume(mask: np.ndarray, spacing, min_volume_mm3: float) -> np.ndarray:
    """bool (H, W, D): ``mask`` without its 26-connected components smaller than ``min_volume_mm3``."""
    m = np.asarray(mask, bool)
    if m.ndim != 3:
        raise ValueError(f"clean_volume expects a 3-D mask, got shape {m.shape}")
    if min_volume_mm3 < 0:
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")
    if min_volume_mm3 == 0 or not m.any():
        return m.copy()
    labels, n = ndimage.label(m, STRUCTURE_3D)
    voxel_mm3 = float(np.prod(np.asarray(spacing, np.float64)[:3]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
    keep = sizes >= min_volume_mm3
    keep[0] = False
    return keep[labels]


def component_boxes(mask: np.ndarray, max_boxes: int = MAX_BOXES) -> np.ndarray:
    """float32 (max_boxes, 4): an inclusive XYXY box per 8-connected component of the 2-D ``mask``, largest
    component first; rows beyond the components are NaN (no box)."""
    m = np.asarray(mask) > 0
    if m.ndim != 2:
        raise ValueError(f"component_boxes expects a 2-D mask, got shape {m.shape}")
    out = np.full((max_boxes, 4), np.nan, np.float32)
    if not m.any():
        return out
    labels, n = ndimage.label(m, STRUCTURE_2D)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")[:max_boxes]
    objects = ndimage.find_objects(labels)
    for k, lab in enumerate(order):
        rows, cols = objects[lab]
        out[k] = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
    return out


def boxes_for_masks(masks: np.ndarray, max_boxes: int = MAX_BOXES) -> np.ndarray:
    """(n, S, S) masks -> (n, max_boxes, 4) component boxes."""
    return np.stack([component_boxes(m, max_boxes) for m in masks]) if len(masks) else np.zeros((0, max_boxes, 4))


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / total


def choose_min_volume(cases: list[tuple[np.ndarray, np.ndarray, tuple]], candidates=MIN_VOLUME_CANDIDATES_MM3):
    """(threshold in mm³, {threshold: mean per-patient Dice}) over ``cases`` = [(pred, gt, spacing)]: the candidate
    with the highest mean Dice of the cleaned predictions (BraTS convention: both empty = 1); ties -> smaller."""
    if not cases:
        raise ValueError("choose_min_volume needs at least one validation case")
    scores = {}
    for t in sorted(float(c) for c in candidates):
        scores[t] = float(np.mean([_dice(clean_volume(p, s, t), g) for p, g, s in cases]))
    best = max(scores.values())
    return next(t for t, v in scores.items() if v >= best - 1e-12), scores


@dataclass
class Cleanup:
    """The U-Net's clean-up, as chosen on the validation cases (``unet/cleanup.json``)."""

    min_volume_mm3: float
    candidates: dict[str, float]
    n_val_cases: int
    unet_sha256: str
    split_sha256: str
    chosen_on: str = "validation cases"
    connectivity: str = "26 (3-D), components < min_volume_mm3 removed"
    val_predictions: dict = field(default_factory=dict, repr=False)  # case_id -> cleaned bool volume (not stored)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "val_predictions"}


@torch.no_grad()
def unet_volume(unet, case: Case, img_size: int, modalities, device="cpu", batch: int = 8) -> dict:
    """The U-Net's prediction of a whole case on its native grid, as evaluation makes it:
    ``{"pred": bool (H, W, D), "gt": bool or None, "spacing": (3,)}``."""
    import nibabel as nib

    vol = load_case(case, modalities)
    image, brain = vol["image"], vol["brain"]
    h, w, d = brain.shape
    zs = np.flatnonzero(brain.reshape(-1, d).any(0))
    pred = np.zeros((h, w, d), bool)
    if len(zs):
        empty = np.zeros((h, w), np.uint8)
        x = torch.from_numpy(np.stack([resize_slice(image[..., z], empty, img_size)[0] for z in zs]).astype(np.float32))
        logits = batched(lambda a, b: unet(x[a:b].to(device))[:, 0].float().cpu(), len(zs), batch)
        pred[:, :, zs] = np.moveaxis(to_native(logits, h, w), 0, -1)
    spacing = tuple(float(s) for s in nib.load(case.images["flair"]).header.get_zooms()[:3])
    gt = None if vol["wt"] is None else vol["wt"].astype(bool)
    return {"pred": pred, "gt": gt, "spacing": spacing}


def stored_cleanup(run, unet_path, split_sha256: str | None = None, unet_sha256: str | None = None) -> Cleanup | None:
    """The clean-up stored in ``unet/cleanup.json`` when it was chosen for this U-Net checkpoint (and, given
    ``split_sha256``, this split), else None; ``unet_sha256``: the checkpoint's hash when already known."""
    path = Path(run.unet) / "cleanup.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("unet_sha256") != (unet_sha256 or file_sha256(unet_path)):
        return None
    if split_sha256 is not None and rec.get("split_sha256") != split_sha256:
        return None
    return Cleanup(**rec)


def cleanup_for(
    run, unet, unet_path, split: dict, root, img_size: int, modalities, device="cpu", progress=True, predictions=False
) -> Cleanup:
    """The clean-up threshold for this U-Net checkpoint and split: read from ``unet/cleanup.json`` when it was
    chosen for the same checkpoint and split, else chosen now on the validation cases and stored.
    ``predictions``: also return the cleaned validation volumes (``val_predictions``; always filled when the
    threshold is chosen in this call)."""
    from brainseg_utils.runtime.progress import tqdm

    path = Path(run.unet) / "cleanup.json"
    sha = file_sha256(unet_path)
    found = stored_cleanup(run, unet_path, split["sha256"], sha)
    if found is not None and not predictions:
        return found
    by_id = {c.case_id: c for c in discover_cases(Path(root))}
    val = [by_id[c] for c in split["val"] if c in by_id and by_id[c].seg is not None]
    if not val:
        raise ValueError(
            f"no labelled validation cases of splits.json under {root}: the U-Net's clean-up threshold is chosen there"
        )
    vols = {}
    for case in tqdm(val, desc="U-Net on the validation cases", disable=not progress):
        vols[case.case_id] = unet_volume(unet, case, img_size, modalities, device)
    out = found
    if out is None:
        t, scores = choose_min_volume([(v["pred"], v["gt"], v["spacing"]) for v in vols.values()])
        out = Cleanup(t, {f"{k:g}": round(v, 6) for k, v in scores.items()}, len(val), sha, split["sha256"])
        atomic_write_json(path, out.record())
        print(
            f"U-Net clean-up: 3-D components < {t:g} mm³ removed (chosen on {len(val)} validation cases: "
            f"mean Dice {scores[t]:.4f}, uncleaned {scores[0.0]:.4f})"
        )
    out.val_predictions = {cid: clean_volume(v["pred"], v["spacing"], out.min_volume_mm3) for cid, v in vols.items()}
    return out


def validation_boxes(cleaned: dict[str, np.ndarray], cache, rows, max_boxes: int = MAX_BOXES) -> dict[int, np.ndarray]:
    """{slice-cache row: (max_boxes, 4) boxes} for ``rows`` from the cleaned native volumes of their cases."""
    size = int(cache.images.shape[-1])
    out = {}
    for r in np.asarray(rows, np.int64):
        case_id, z = cache.index.at[int(r), "case_id"], int(cache.index.at[int(r), "z"])
        out[int(r)] = component_boxes(to_cache_size(cleaned[case_id][:, :, z], size), max_boxes)
    return out
