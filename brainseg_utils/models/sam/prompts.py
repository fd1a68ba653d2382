"""Prompt modes and boxes.

Boxes are XYXY in pixel indices of the slice (x = column, y = row), inclusive, as SAM and MedSAM use.

Prompt modes (``PROMPTS``):
  * ``none``: no prompt; the decoder must find the tumour alone and predict empty on tumour-free
    slices (the fair comparison with the U-Net);
  * ``box``: the ground-truth box (in training enlarged by 0..k px per side, MedSAM-style). At
    evaluation it is an *oracle* prompt;
  * ``unet_box``: at evaluation only, the box of the U-Net's prediction (a fully automatic cascade).
"""

from __future__ import annotations

import numpy as np
import torch

PROMPTS = ("none", "box", "unet_box")
TRAIN_PROMPTS = ("none", "box")


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


def parse_prompts(text: str, allowed: tuple[str, ...] = TRAIN_PROMPTS) -> list[str]:
    """ "box,none" -> ["box", "none"]; unknown or empty lists raise with the options."""
    prompts = [p.strip() for p in str(text).split(",") if p.strip()]
    bad = [p for p in prompts if p not in allowed]
    if not prompts or bad:
        raise ValueError(f"prompt modes must be a comma-separated subset of {list(allowed)}, got {text!r}")
    return list(dict.fromkeys(prompts))
