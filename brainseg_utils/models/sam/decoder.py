"""The trainable SAM mask decoder, batched: B images x 1 prompt each (segment-anything's ``MaskDecoder`` assumes one
image with N prompts and ``repeat_interleave``s the image embedding; this feeds it one prompt per image without
editing the installed package). Low-resolution logits (B, 1, 256, 256) are resized to the slice size S.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from brainseg_utils.models.sam.backends import SamBackend
from brainseg_utils.models.sam.prompts import TRAIN_PROMPTS


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
    for "no prompt", or (B, K, 4) for up to K boxes per slice, united) -> logits (B, 1, S, S)``. Only the
    decoder is in ``trainable_parameters()``; the image encoder is not part of this module (embeddings come from
    the cache), so checkpoints stay small.
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

    EMPTY_LOGIT = -1e4  # a slice without any box: an empty mask (finite: bilinear weights x -inf would be NaN)

    def low_res_logits(self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits (B, 1, 256, 256) covering the whole square slice (evaluation maps them straight
        to the native grid with ``grid.to_native``: one interpolation).

        ``boxes`` (B, 4): one box (or NaN row: no prompt) per slice. ``boxes`` (B, K, 4): up to K boxes per slice,
        NaN rows unused (the U-Net cascade's one box per component): the decoder runs once per box and the
        masks are united (element-wise max of the logits); a slice with no box gets ``EMPTY_LOGIT``."""
        if boxes is not None and boxes.dim() == 3:
            return self._multi_box_logits(embeddings, boxes)
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

    def _multi_box_logits(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        valid = ~torch.isnan(boxes).any(-1)  # (B, K)
        size = (boxes.shape[0], 1, self.low_res_size, self.low_res_size)
        out = embeddings.new_full(size, self.EMPTY_LOGIT, dtype=torch.float32)
        for k in range(boxes.shape[1]):  # slot k of every slice that has a k-th box, as one batch
            rows = valid[:, k].nonzero()[:, 0]
            if len(rows):
                out[rows] = torch.maximum(out[rows], self.low_res_logits(embeddings[rows], boxes[rows, k]).float())
        return out

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 1, S, S) at the slice-cache size (what training compares with the cached masks)."""
        low = self.low_res_logits(embeddings, boxes)
        return F.interpolate(low.float(), size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
