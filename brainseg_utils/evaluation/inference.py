"""Trained models at inference: load them from a run, predict a whole case, map back to the native grid.

Owns what evaluation and the demo share (neither imports the training engine):
  * ``load_unet`` / ``load_sam_decoder`` / ``load_models``: checkpoints -> models, with the split check
    (a model trained on another split is refused);
  * ``to_native`` (re-exported from ``grid``): logits at any square size -> boolean masks on the source grid;
  * ``predict_case``: every brain slice of a case through the U-Net and every SAM variant.
    SAM's 256 x 256 low-resolution logits go straight to the native grid (one interpolation),
    not through the slice-cache size first.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainseg_utils.data.brats import Case
from brainseg_utils.data.slices import resize_slice
from brainseg_utils.data.volumes import load_case
from brainseg_utils.evaluation.cascade import boxes_for_masks, clean_volume
from brainseg_utils.evaluation.grid import batched, to_cache_size, to_native
from brainseg_utils.evaluation.stopwatch import Stages
from brainseg_utils.models.sam import wise
from brainseg_utils.models.sam.decoder import SamDecoderModel
from brainseg_utils.models.sam.discovery import backend_for_decoder
from brainseg_utils.models.sam.prompts import mask_to_box
from brainseg_utils.models.unet import UNet
from brainseg_utils.runtime.checkpoints import checkpoint_arch, load_checkpoint, load_model_state
from brainseg_utils.runtime.encoder_runtime import RuntimeModule
from brainseg_utils.runtime.env import missing_hint
from brainseg_utils.runtime.io import file_sha256
from brainseg_utils.runtime.paths import RunDir


# ----------------------------------------------------------------------------- loading models
def check_split(ckpt: dict, path: Path, split_sha256: str) -> None:
    """Refuse a checkpoint trained on another split than the one being evaluated."""
    have = ckpt.get("meta", {}).get("split_sha256")
    if have != split_sha256:
        raise ValueError(
            f"{path} was trained on split {str(have)[:12]}…, but splits.json has "
            f"{split_sha256[:12]}…; evaluating it on this test split would leak or mismatch cases. "
            "Re-run notebooks 02/03 on this split or point OUTPUT_DIR at the matching run."
        )


def load_unet(path: str | os.PathLike, split_sha256: str | None = None, device="cpu") -> tuple[RuntimeModule, dict]:
    """The U-Net of a checkpoint, for inference (a ``RuntimeModule``: OpenVINO on CPU when available)."""
    path = Path(path)
    ckpt = load_checkpoint(path, expect_arch="unet")
    if split_sha256 is not None:
        check_split(ckpt, path, split_sha256)
    cfg = {k: v for k, v in ckpt["config"]["model"].items() if k != "arch"}
    model = UNet(**cfg)
    load_model_state(model, ckpt["model"], str(path))
    # CPU inference through OpenVINO fp32 when installed (measured 1.6-2.7x faster than PyTorch here; same
    # logits within 2e-6); training, gradients, CUDA and unusual shapes stay in PyTorch. The converted model
    # is cached beside the checkpoint, keyed by its sha256.
    wrapped = RuntimeModule(
        model.to(device).eval(), None, {"checkpoint_sha256": file_sha256(path)}, path.parent, label="unet"
    )
    return wrapped.eval(), ckpt


def load_sam_decoder(
    path: str | os.PathLike, backend, split_sha256: str | None = None, device="cpu"
) -> tuple[SamDecoderModel, dict]:
    path = Path(path)
    ckpt = load_checkpoint(path, expect_arch="sam_decoder")
    if split_sha256 is not None:
        check_split(ckpt, path, split_sha256)
    cfg = ckpt["config"]["model"]
    if cfg.get("backend") != backend.name:
        raise ValueError(f"{path} was trained with backend {cfg.get('backend')!r}, not {backend.name!r}")
    model = wise.decoder_from_checkpoint(backend, ckpt, path)  # meta.wise_ft.alpha < 1: blended (WiSE-FT)
    return model.to(device).eval(), ckpt


def training_data(ckpt: dict) -> dict:
    """What a checkpoint's model learnt from: ``{train_slices, val_slices, train_cases, val_cases}``
    (None where unknown), plus ``note`` when the checkpoint recorded one (e.g. a subsample) and, for a SAM decoder
    that records WiSE-FT, ``wise_ft_alpha`` (its blend is named in the note when below 1)."""
    data = dict(ckpt.get("meta", {}).get("data") or {})
    recorded = checkpoint_arch(ckpt) == "sam_decoder" and "wise_ft" in ckpt.get("meta", {})
    alpha = wise.checkpoint_alpha(ckpt) if recorded else None  # a SAM decoder's WiSE-FT coefficient
    text = "; ".join(t for t in (data.get("note"), wise.note(alpha) if alpha else "") if t)
    return (
        {k: data.get(k) for k in ("train_slices", "val_slices", "train_cases", "val_cases")}
        | ({"note": text} if text else {})
        | ({"wise_ft_alpha": alpha} if alpha else {})
    )


@dataclass
class Models:
    """What evaluation runs: the U-Net and, per SAM backend, the trained decoders by prompt.

    ``data`` maps every model name (see ``names``) to what it learnt from (``training_data``); ``unet_config`` is
    the U-Net checkpoint's stored training and model config plus its recorded ``augmentation`` (``protocol``).
    """

    unet: UNet
    sam: dict[str, dict[str, SamDecoderModel]] = field(default_factory=dict)  # backend -> prompt -> decoder
    backends: dict = field(default_factory=dict)
    data: dict[str, dict] = field(default_factory=dict)
    unet_config: dict = field(default_factory=dict)
    cleanup: object = None  # cascade.Cleanup: the U-Net's 3-D clean-up (set by evaluation, chosen on validation)

    def names(self) -> list[str]:
        out = ["unet"] + (["unet_clean"] if self.cleanup is not None else [])
        for b, decs in self.sam.items():
            if "none" in decs:
                out.append(f"sam_{b}_none")
            if "box" in decs:
                out += [f"sam_{b}_box", f"sam_{b}_unet_box"]
            if "box_zeroshot" in decs:
                out.append(f"sam_{b}_box_zeroshot")
        return out


def load_models(run: RunDir, split_sha256: str, device="cpu", sam_checkpoint: str = "") -> Models:
    """The U-Net from ``unet/best.pt`` and every ``sam/sam_<backend>_<prompt>/best.pt``.

    ``sam_checkpoint``: the ``SAM_CHECKPOINT`` parameter (a path, or ``vit_b=/a.pth,medsam=/b.pth``);
    weights not given are searched for (``sam_discovery``) and must be those the decoders were trained with.
    """
    unet_path = run.unet_best
    if not unet_path.exists():
        hint = missing_hint("unet/best.pt")
        raise FileNotFoundError(f"{unet_path} not found: run notebooks/02_train_unet.ipynb first; {hint}")
    unet, ckpt = load_unet(unet_path, split_sha256, device)
    unet_config = {**ckpt.get("config", {}), "augmentation": ckpt.get("meta", {}).get("augmentation")}
    models = Models(unet, data={"unet": training_data(ckpt)}, unet_config=unet_config)
    for best in run.sam_checkpoints().values():
        dec_ckpt = load_checkpoint(best, expect_arch="sam_decoder")
        cfg = dec_ckpt["config"]["model"]
        name = cfg["backend"]
        if name not in models.backends:
            trained = dec_ckpt.get("meta", {}).get("checkpoint_sha256")
            models.backends[name] = backend_for_decoder(name, trained, sam_checkpoint).to(device)
        dec, ckpt = load_sam_decoder(best, models.backends[name], split_sha256, device)
        models.sam.setdefault(name, {})[cfg["prompt"]] = dec
        models.data[f"sam_{name}_{cfg['prompt']}"] = training_data(ckpt)
        if cfg["prompt"] == "box":  # the pretrained decoder as shipped: how much did fine-tuning add?
            zero = SamDecoderModel(models.backends[name], "box", cfg["img_size"])
            models.sam[name]["box_zeroshot"] = zero.to(device).eval()
            models.data[f"sam_{name}_unet_box"] = {**training_data(ckpt), "note": "box decoder's data; box from unet"}
            models.data[f"sam_{name}_box_zeroshot"] = {
                "train_slices": 0,
                "val_slices": 0,
                "train_cases": 0,
                "val_cases": 0,
                "note": f"pretrained {name} decoder, not fine-tuned on this data",
            }
    return models


# ----------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_case(
    models: Models,
    case: Case,
    img_size: int,
    modalities: tuple[str, ...],
    device="cpu",
    batch: int = 8,
    stages: Stages | None = None,
) -> dict:
    """Predicted whole-tumour volumes of every model for one case, plus the truth and geometry.

    Returns ``predict_volume``'s dict plus "affine" and "flair": float32 (H, W, D) in [0, 1].
    """
    vol = load_case(case, modalities)
    spacing = tuple(float(s) for s in nib.load(case.images["flair"]).header.get_zooms()[:3])
    out = predict_volume(models, vol["image"], vol["brain"], spacing, img_size, device, batch, stages, vol["wt"])
    return {**out, "affine": vol["affine"], "flair": vol["image"][0]}


@torch.no_grad()
def predict_volume(
    models: Models,
    image: np.ndarray,
    brain: np.ndarray,
    spacing: tuple,
    img_size: int,
    device="cpu",
    batch: int = 8,
    stages: Stages | None = None,
    wt: np.ndarray | None = None,
    progress=None,
) -> dict:
    """Every model on every brain slice of one volume (evaluation's ``predict_case``; the demo's whole volume).

    ``image`` float32 (C, H, W, D) in [0, 1]; ``brain`` bool (H, W, D): slices with any brain voxel are
    predicted, the others stay empty; ``wt`` the truth (H, W, D) in {0, 1}, or None (the oracle-box variants,
    which need it, are then skipped); ``progress(stage, done, total)`` after each batch.
    Returns {"gt": bool (H, W, D) or None, "pred": {model: bool (H, W, D)}, "brain_z": int array,
    "spacing", "sample": float32 (C, S, S) the brain slice with the largest tumour at cache size,
    "sample_box": its ground-truth XYXY box or None} (the sample is what latency is measured on).
    """
    h, w, d = brain.shape
    truth = None if wt is None else np.asarray(wt).astype(bool)
    zs = np.flatnonzero(brain.reshape(-1, d).any(0))
    empty = np.zeros((h, w), np.uint8)
    small = [
        resize_slice(image[..., z], empty if truth is None else truth[..., z].astype(np.uint8), img_size) for z in zs
    ]
    x = torch.from_numpy(np.stack([s[0] for s in small]).astype(np.float32)) if len(zs) else torch.zeros(0)
    gt_small = np.stack([s[1] for s in small]) if len(zs) else np.zeros((0, img_size, img_size), np.uint8)
    tick = (lambda name: None) if progress is None else (lambda name: lambda done, n: progress(name, done, n))

    preds: dict[str, np.ndarray] = {}

    def place(p_native: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w, d), bool)
        out[:, :, zs] = np.moveaxis(p_native, 0, -1)
        return out

    stage = stages or (lambda *a, **k: nullcontext())  # time and memory of each stage, when asked
    with stage("unet", device):
        unet_logits = batched(
            lambda a, b: models.unet(x[a:b].to(device))[:, 0].float().cpu(), len(zs), batch, tick("unet")
        )
        preds["unet"] = place(to_native(unet_logits, h, w))
    unet_small = (unet_logits > 0).numpy()  # what the cascade's boxes come from: the U-Net's mask ...
    if models.cleanup is not None:  # ... after the 3-D clean-up, resized like the cache's masks
        with stage("clean", device):
            preds["unet_clean"] = clean_volume(preds["unet"], spacing, models.cleanup.min_volume_mm3)
            small = [to_cache_size(preds["unet_clean"][..., z], img_size) for z in zs]
            unet_small = np.stack(small) if len(zs) else unet_small

    for bname, decoders in models.sam.items():
        preds.update(
            _sam_predictions(
                bname,
                models.backends[bname],
                decoders,
                x,
                None if truth is None else gt_small,
                unet_small,
                device,
                batch,
                lambda p: place(to_native(p, h, w)),
                stage,
                tick,
            )
        )
    k = int(gt_small.reshape(len(zs), -1).sum(1).argmax()) if len(zs) else None  # largest tumour slice
    return {
        "gt": truth,
        "pred": preds,
        "brain_z": zs,
        "spacing": spacing,
        "sample": None if k is None else x[k].numpy(),
        "sample_box": None if k is None else mask_to_box(gt_small[k]),
    }


@torch.no_grad()
def _sam_predictions(bname, backend, decoders, x, gt_small, unet_small, device, batch, finish, stage, tick) -> dict:
    """SAM variants of one backend on a case's brain slices ``x`` (n, C, S, S); ``finish`` maps
    (n, L, L) low-resolution logits to a native-grid volume; ``gt_small`` None: no truth, no oracle variants;
    ``tick(stage)``: a progress callback for ``batched`` or None. Each slice is encoded at most once;
    slices without a prompt (box variants) get a large negative logit, i.e. an empty mask. The oracle variants
    get the ground-truth box (one around the whole tumour); ``unet_box`` one box per connected component of
    ``unet_small`` (the cleaned U-Net mask), masks united."""
    n = len(x)
    need = np.zeros(n, bool)
    if "none" in decoders:
        need[:] = True
    if "box" in decoders:
        need |= unet_small.reshape(n, -1).any(1) | (False if gt_small is None else gt_small.reshape(n, -1).any(1))
    idx = np.flatnonzero(need)
    with stage(f"encode {bname}", device, slices=len(idx)):
        emb = batched(
            lambda a, b: backend.encode(x[idx[a:b]].to(device)).float().cpu(), len(idx), batch, tick(f"SAM {bname}")
        )
    pos = {int(i): k for k, i in enumerate(idx)}

    def run(dec, rows, boxes):
        low = None
        if len(rows):
            e = emb[[pos[int(r)] for r in rows]]
            bx = None if boxes is None else torch.from_numpy(np.stack(boxes))
            low = batched(
                lambda a, b: (
                    dec.low_res_logits(e[a:b].to(device), None if bx is None else bx[a:b].to(device))[:, 0]
                    .float()
                    .cpu()
                ),
                len(rows),
                batch,
            )
        size = low.shape[-1] if low is not None else dec.low_res_size
        logits = torch.full((n, size, size), -1e4)  # finite: bilinear weights of 0 x -inf would be NaN
        if low is not None:
            logits[rows] = low
        return finish(logits)

    out = {}
    if "none" in decoders:
        with stage(f"sam_{bname}_none", device, slices=n):
            out[f"sam_{bname}_none"] = run(decoders["none"], np.arange(n), None)
    jobs = [
        ("box", f"sam_{bname}_box", gt_small),
        ("box", f"sam_{bname}_unet_box", unet_small),
        ("box_zeroshot", f"sam_{bname}_box_zeroshot", gt_small),
    ]
    for key, name, source in jobs:
        if key in decoders and source is not None:
            rows = np.flatnonzero(source.reshape(n, -1).any(1))
            boxes = (
                boxes_for_masks(source[rows]) if name.endswith("_unet_box") else [mask_to_box(source[r]) for r in rows]
            )
            with stage(name, device, slices=len(rows)):
                out[name] = run(decoders[key], rows, list(boxes))
    return out
