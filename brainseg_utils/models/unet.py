"""The classic 2-D U-Net (Ronneberger et al. 2015) with BatchNorm, as in the original project.

Encoder 64 -> 128 -> 256 -> 512, bottleneck 1024 (with dropout), decoder back to 64 with skip
connections, a 1x1 head producing one logit map. ``base_channels`` scales every width
(64 gives ~31 M parameters); ``in_channels`` is 1 for FLAIR or 4 for all modalities.

Shapes: input float (B, in_channels, H, W) -> logits (B, 1, H, W). Any H, W works: decoder
features are padded to their skip connection when pooling floored an odd size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BN -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample x2 halving channels (transposed conv, or bilinear + 1x1 conv), concat skip, DoubleConv."""

    def __init__(self, cin: int, cout: int, bilinear: bool):
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cin // 2, 1)
            )
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = DoubleConv(cin // 2 + cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, base_channels: int = 64, bilinear: bool = False, dropout: float = 0.3):
        super().__init__()
        if in_channels < 1 or base_channels < 1:
            raise ValueError(f"in_channels and base_channels must be >= 1, got {in_channels}, {base_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c = [base_channels * m for m in (1, 2, 4, 8, 16)]  # 64, 128, 256, 512, 1024
        self.config = {
            "arch": "unet",
            "in_channels": in_channels,
            "base_channels": base_channels,
            "bilinear": bilinear,
            "dropout": dropout,
        }
        self.inc = DoubleConv(in_channels, c[0])
        self.downs = nn.ModuleList(DoubleConv(c[i], c[i + 1]) for i in range(3))
        self.bottleneck = nn.Sequential(DoubleConv(c[3], c[4]), nn.Dropout2d(dropout))
        self.ups = nn.ModuleList(Up(c[i + 1], c[i], bilinear) for i in reversed(range(4)))
        self.head = nn.Conv2d(c[0], 1, 1)
        # Start from a 1% tumour prior (Lin et al. 2017): without it the first epochs are spent
        # pushing every background pixel of every slice down from p = 0.5.
        nn.init.constant_(self.head.bias, -math.log(99.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]  # (B, 64, H, W)
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))  # (B, 128/256/512, H/2^k, W/2^k)
        x = self.bottleneck(F.max_pool2d(skips[-1], 2))  # (B, 1024, H/16, W/16)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return self.head(x)  # (B, 1, H, W) logits


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total": all parameters, "trainable": those with requires_grad}."""
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
