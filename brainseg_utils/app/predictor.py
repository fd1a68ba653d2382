"""The demo's models: ``Predictor`` runs the U-Net and SAM on one 2-D slice; ``predictor_from_run`` loads
them from a run's checkpoints (``unet/best.pt``, any SAM decoders, and the U-Net's clean-up ``unet/cleanup.json``
when it was chosen for this checkpoint).

``Predictor.warm_up`` runs every model twice on a made-up slice (and the U-Net once at the whole-volume batch
size) before the page takes requests: a model's first call pays one-off costs (memory allocation, kernel
selection, OpenVINO compilation: measured 247 ms for the U-Net's first call against 5 ms after it on this CPU),
and the latencies the page shows are meant to be the steady ones. ``warmup`` keeps both figures.
"""

import os
import time

import numpy as np
import torch

from brainseg_utils.app.upload import UploadError
from brainseg_utils.data.slices import box_to_cache, resize_slice
from brainseg_utils.evaluation.cascade import component_boxes
from brainseg_utils.evaluation.grid import to_native
from brainseg_utils.evaluation.inference import load_sam_decoder, load_unet
from brainseg_utils.models.sam.discovery import backend_for_decoder
from brainseg_utils.models.sam.prompts import PROMPTS
from brainseg_utils.runtime.checkpoints import load_checkpoint, resolve_device
from brainseg_utils.runtime.env import missing_hint
from brainseg_utils.runtime.paths import RunDir
from brainseg_utils.workflow.restore import restore_previous


class Predictor:
    """U-Net + optional SAM (a box-prompt decoder and/or a no-prompt decoder) on one 2-D slice."""

    def __init__(
        self,
        unet,
        img_size: int,
        sam_box=None,
        sam_none=None,
        backend=None,
        device="cpu",
        dataset: str = "synthetic",
        modalities: tuple[str, ...] | None = None,
    ):
        self.in_channels = int(unet.config.get("in_channels", 1))
        self.modalities = tuple(modalities) if modalities else (("flair",) if self.in_channels == 1 else ())
        if len(self.modalities) != self.in_channels:
            raise ValueError(
                f"the U-Net takes {self.in_channels} input channels but its checkpoint names the modalities "
                f"{self.modalities}: retrain it (notebook 02) or pass the modalities it was trained on"
            )
        self.unet, self.img_size, self.sam_box, self.sam_none = unet.eval(), img_size, sam_box, sam_none
        self.backend, self.device, self.dataset = backend, torch.device(device), dataset
        self.cleanup = None  # cascade.Cleanup of this U-Net (``unet/cleanup.json``), for the whole volume
        self.warmup: dict | None = None  # ``warm_up``'s first and steady latencies (ms)

    def warm_up(self, volume_batch: int = 8) -> dict:
        """Run each model on a made-up 240 x 240 slice twice (first call: one-off costs; second: steady) and the
        U-Net once at ``volume_batch`` slices; once per Predictor. Returns and keeps
        ``{"unet_first_ms", "unet_ms", "sam_first_ms", "sam_ms"}`` (SAM's None without a decoder)."""
        if self.warmup is not None:
            return self.warmup
        yy, xx = np.mgrid[:240, :240]
        sl = ((np.hypot(yy - 120, xx - 110) < 90) * 0.4 + (np.hypot(yy - 100, xx - 140) < 20) * 0.5).astype(np.float32)
        box = np.array([115, 75, 165, 125], np.float32)
        prompt = "box" if self.sam_box is not None else "none"
        sl = np.repeat(sl[None], self.in_channels, 0) if self.in_channels > 1 else sl
        first, steady = self(sl, box, prompt), self(sl, box, prompt)
        if self.sam_none is not None and prompt != "none":
            self(sl, None, "none")
        with torch.no_grad():
            self.unet(torch.zeros(volume_batch, self.in_channels, self.img_size, self.img_size, device=self.device))
        self.warmup = {
            "unet_first_ms": first["unet_ms"],
            "unet_ms": steady["unet_ms"],
            "sam_first_ms": first["sam_ms"],
            "sam_ms": steady["sam_ms"],
        }
        return self.warmup

    def needs(self) -> str:
        """What an upload must be for this U-Net, in words (for messages and the page)."""
        if self.in_channels == 1:
            return "a FLAIR image or volume"
        return (
            f"a 4-D NIfTI stacking the {self.in_channels} modalities {', '.join(self.modalities)} of one case in "
            "that order (X, Y, Z, C; the Medical Segmentation Decathlon's brain-tumour layout)"
        )

    def model_slice(self, sl: np.ndarray) -> np.ndarray:
        """(C, H, W) float32 for the U-Net from a slice (H, W) or a stack (C', H, W); a single-channel U-Net takes
        the first (FLAIR). Raises ``UploadError`` when the upload lacks the modalities the U-Net needs."""
        sl = np.asarray(sl, dtype=np.float32)
        if sl.ndim == 2:
            sl = sl[None]
        if sl.ndim != 3:
            raise UploadError(f"expected a slice (H, W) or a stack of modalities (C, H, W), got shape {sl.shape}")
        if self.in_channels == 1:
            return sl[:1]
        if sl.shape[0] != self.in_channels:
            found = "a single image or volume" if sl.shape[0] == 1 else f"a stack of {sl.shape[0]} volumes"
            raise UploadError(f"this run's U-Net needs {self.needs()}; the upload is {found}")
        return sl

    def volume_input(self, up) -> np.ndarray:
        """(C, H, W, D) for the U-Net from an ``Upload`` (views, no copy); ``UploadError`` as ``model_slice``."""
        if self.in_channels == 1:
            return up.volume[None]
        if up.n_channels != self.in_channels:
            found = "a single volume" if up.n_channels == 1 else f"a stack of {up.n_channels} volumes"
            raise UploadError(f"{up.name}: this run's U-Net needs {self.needs()}; the upload is {found}")
        return up.model_input()

    @torch.no_grad()
    def __call__(self, sl: np.ndarray, box: np.ndarray | None = None, prompt: str = "unet_box") -> dict:
        """``sl`` float32 (H, W) or (C, H, W) in [0, 1] (``model_slice``). Returns bool masks (H, W), latencies
        (ms) and the box used."""
        if prompt not in PROMPTS:
            raise UploadError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        sl = self.model_slice(sl)
        h, w = sl.shape[1:]
        img, _ = resize_slice(sl, np.zeros((h, w), np.uint8), self.img_size)
        x = torch.from_numpy(img[None]).to(self.device)
        t0 = time.perf_counter()
        logits = self.unet(x)[:, 0].cpu()
        unet_ms = (time.perf_counter() - t0) * 1000
        unet_mask = to_native(logits, h, w)[0]
        out = {"unet": unet_mask, "unet_ms": unet_ms, "sam": None, "sam_ms": None, "box": None, "boxes": None}
        out["sam_note"] = ""
        if self.backend is None:
            out["sam_note"] = "no SAM decoder in this run"
            return out
        boxes = None
        if prompt == "unet_box":  # as the evaluation's cascade: one box per 8-connected component, largest first
            boxes = component_boxes(unet_mask)
            boxes = boxes[~np.isnan(boxes).any(1)]
            box = boxes[0] if len(boxes) else None
        elif prompt == "none":
            box = None
        if prompt != "none" and box is None:
            out["sam"], out["sam_ms"] = np.zeros((h, w), bool), 0.0
            out["sam_note"] = "no box (the U-Net found nothing)" if prompt == "unet_box" else "draw a box first"
            return out
        dec = self.sam_box if box is not None else self.sam_none
        if dec is None:
            out["sam_note"] = f"this run has no SAM decoder for prompt {prompt!r}"
            return out
        t0 = time.perf_counter()
        emb = self.backend.encode(x)
        # slice frame -> padded square -> cache size (the geometry resize_slice applied to the image)
        bx = None if box is None else torch.from_numpy(box_to_cache(box, h, w, self.img_size))[None]
        if boxes is not None and len(boxes) > 1:  # (1, K, 4): the decoder per box, masks united
            bx = torch.from_numpy(np.stack([box_to_cache(b, h, w, self.img_size) for b in boxes]))[None]
        sam_logits = dec.low_res_logits(emb, bx.to(self.device) if bx is not None else None)[:, 0].cpu()
        out["sam_ms"] = (time.perf_counter() - t0) * 1000
        out["sam"], out["box"], out["boxes"] = to_native(sam_logits, h, w)[0], box, boxes
        return out


def predictor_from_run(
    output_dir: str | os.PathLike = "outputs", device: str = "auto", sam_checkpoint: str | None = None
) -> Predictor:
    """A Predictor from a run's ``unet/best.pt`` and (if present) its SAM decoders.

    ``sam_checkpoint``: ``SAM_CHECKPOINT`` (a path or ``vit_b=/a.pth,...``); weights not given are searched
    for (``sam_discovery``)."""

    run = RunDir(output_dir)
    restore_previous(run)  # Kaggle: checkpoints of a previous run attached as input (no-op elsewhere)
    dev = resolve_device(device)
    unet_path = run.unet_best
    if not unet_path.exists():
        hint = missing_hint("unet/best.pt")
        raise FileNotFoundError(f"{unet_path} not found: train the U-Net first (notebook 02 or run_all.sh); {hint}")
    unet, ckpt = load_unet(unet_path, device=dev)
    img_size = int(ckpt["meta"].get("img_size", 128))
    dataset = ckpt["meta"].get("dataset", "unknown")
    sam_box = sam_none = backend = None
    decs = list(run.sam_checkpoints().values())
    if decs:
        first_ckpt = load_checkpoint(decs[0], expect_arch="sam_decoder")
        first = first_ckpt["config"]["model"]["backend"]
        trained = first_ckpt.get("meta", {}).get("checkpoint_sha256")
        backend = backend_for_decoder(first, trained, sam_checkpoint or "").to(dev)
        for p in decs:
            if load_checkpoint(p, expect_arch="sam_decoder")["config"]["model"]["backend"] != first:
                continue
            dec, _ = load_sam_decoder(p, backend, device=dev)
            if dec.prompt == "box":
                sam_box = dec
            else:
                sam_none = dec
    mods = ckpt["meta"].get("modalities")
    pred = Predictor(unet, img_size, sam_box, sam_none, backend, dev, dataset, tuple(mods) if mods else None)
    pred.cleanup = _cleanup(run, unet_path)
    return pred


def _cleanup(run: RunDir, unet_path) -> object:
    """The U-Net's clean-up from ``unet/cleanup.json`` when it was chosen for this very checkpoint, else None
    (the demo never chooses one: that needs the validation cases)."""
    from brainseg_utils.evaluation.cascade import stored_cleanup

    return stored_cleanup(run, unet_path)
