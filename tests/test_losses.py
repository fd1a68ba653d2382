import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from brainseg_utils.models.losses import FocalDiceLoss, dice_loss, focal_loss


def test_focal_by_hand():
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    # p = 0.5 for both: positive 0.8 * 0.25 * ln 2, negative 0.2 * 0.25 * ln 2; mean of the two
    expected = (0.8 * 0.25 * math.log(2) + 0.2 * 0.25 * math.log(2)) / 2
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1, 16, 16, generator=g) * 3
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.7).float()
    ref = sigmoid_focal_loss(logits, target, alpha=0.8, gamma=2.0, reduction="mean")
    assert focal_loss(logits, target, 0.8, 2.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_dice_by_hand():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1  # 4 pixels
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)  # sample 2 empty/empty -> 0 too
    half = torch.zeros(1, 1, 4, 4)  # p = 0.5 everywhere vs 4 positives
    # dice = (2 * 2 + 1) / (8 + 4 + 1) = 5/13
    assert dice_loss(half, target[:1]).item() == pytest.approx(1 - 5 / 13, rel=1e-6)


def test_fp16_extremes_stay_finite():
    logits = torch.tensor([[[[60000.0, -60000.0, 0.0, 10.0]]]], dtype=torch.float16)
    target = torch.tensor([[[[0.0, 1.0, 1.0, 1.0]]]], dtype=torch.float16)
    loss = FocalDiceLoss()(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.randn(2, 1, 8, 8, requires_grad=True)
        loss = FocalDiceLoss()(x * 1e4, (x > 0).float().detach())
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_shape_mismatch_and_bad_options():
    with pytest.raises(ValueError, match="same shape"):
        FocalDiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        FocalDiceLoss(alpha=1.5)
