"""Focal + Dice loss on logits for binary segmentation.

Both terms are computed in float32 whatever the autocast dtype: logits are cast up first, the
focal term goes through ``binary_cross_entropy_with_logits`` (log-sum-exp stable) and the Dice
term through ``sigmoid`` plus a smoothing constant, so fp16 autocast cannot overflow or divide
by zero.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.8, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss (Lin et al. 2017).

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` per pixel, with ``alpha_t = alpha`` on tumour pixels
    and ``1 - alpha`` on background (alpha = 0.8 up-weights the rare class). ``logits`` and
    ``target`` (in {0, 1}) share a shape.
    """
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * target + (1.0 - alpha) * (1.0 - target)
    return (alpha_t * (1.0 - p_t).pow(gamma) * bce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, per sample over (C, H, W), averaged over the batch.

    ``smooth`` keeps empty/empty samples at loss 0 and avoids 0/0.
    """
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (probs * target).sum(1)
    dice = (2.0 * inter + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return (1.0 - dice).mean()


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * dice`` (defaults 1 and 1; focal alpha 0.8, gamma 2)."""

    def __init__(self, alpha: float = 0.8, gamma: float = 2.0, focal_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or gamma < 0:
            raise ValueError(f"need alpha in [0, 1] and gamma >= 0, got alpha={alpha}, gamma={gamma}")
        self.alpha, self.gamma, self.focal_weight, self.dice_weight = alpha, gamma, focal_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
        return self.focal_weight * focal_loss(logits, target, self.alpha, self.gamma) + self.dice_weight * dice_loss(
            logits, target
        )
