"""Between the slice cache's square size and a case's native grid, both ways, and the batched loop
that evaluation, the cascade and the demo share.

  * ``to_native``: logits at any square size -> boolean masks on the source grid. One bilinear,
    pixel-centre-aligned (``align_corners=False``) interpolation of the *logits* to the padded
    square, crop of the padding, threshold at 0 (= sigmoid 0.5). The slice cache resizes images and
    masks with the same centre-aligned convention (``slices.resize_slice``), so nothing shifts;
  * ``to_cache_size``: a native mask padded and resized exactly as the slice cache resizes masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brainseg_utils.data.slices import resize_slice, square_padding


def to_native(logits: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(n, S, S) logits at any square size S -> bool (n, h, w) on the source grid.

    Bilinear (pixel-centre aligned) to the padded square ``max(h, w)``, crop the centred padding,
    threshold at 0 (sigmoid 0.5). Works the same for U-Net logits at the cache size and for SAM's
    256 x 256 low-resolution logits.
    """
    if logits.dim() != 3 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"expected logits (n, S, S), got shape {tuple(logits.shape)}")
    side, top, left = square_padding(h, w)
    up = F.interpolate(logits[:, None].float(), size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    return (up[:, top : top + h, left : left + w] > 0).cpu().numpy()


def to_cache_size(mask: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size): a native (H, W) mask padded and resized exactly as the slice cache resizes masks."""
    h, w = mask.shape
    return resize_slice(np.zeros((1, h, w), np.float32), np.asarray(mask, np.uint8), size)[1]


@torch.no_grad()
def batched(fn, n: int, batch: int, progress=None) -> torch.Tensor:
    """``fn(start, stop)`` over ``range(n)`` in chunks of ``batch``, results concatenated (empty when n = 0).
    ``progress``: called as ``progress(done, n)`` after each chunk (e.g. the demo's progress bar)."""
    parts = []
    for i in range(0, n, batch):
        parts.append(fn(i, min(i + batch, n)))
        if progress is not None:
            progress(min(i + batch, n), n)
    return torch.cat(parts) if n else torch.zeros(0)
