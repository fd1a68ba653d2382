"""albumentations 2.x pipelines for 2-D slices (image float32 HWC in [0, 1], mask uint8 HW).

``strict=True`` turns a misspelt or removed argument (1.x names such as ``var_limit``,
``cval``, ``alpha_affine``) into an error instead of a silently ignored warning.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

import albumentations as A  # noqa: E402
import cv2  # noqa: E402


def train_augmentation(strength: float = 1.0) -> A.Compose:
    """Flip, small affine (rotate/scale/shift), elastic deformation, Gaussian noise.

    ``strength`` scales the probabilities (0 disables augmentation). Geometric transforms
    move image and mask together (mask: nearest neighbour, border 0); noise touches the
    image only. Intensities are clipped back to [0, 1].
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
    p = strength
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5 * p),
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-15, 15),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.5 * p,
            ),
            A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.2 * p),
            A.GaussNoise(std_range=(0.01, 0.04), mean_range=(0.0, 0.0), p=0.3 * p),
        ],
        strict=True,
        seed=0,
    )
