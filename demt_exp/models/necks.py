"""FeatConv neck of the DeGMix ViT head (SPEC 1.7), with the input widths as a parameter.

The official neck hard-codes four 768-channel inputs (ViT-B), so it cannot serve ViT-L; here each
branch takes its own width. The inputs must share one spatial grid (plain ViT maps do); the
output is 4x that grid. Normalisation is plain BatchNorm2d: the official SyncBN is obtained by
converting the model for distributed training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE = 4


def conv_bn_relu_pair(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv without bias, BN, ReLU) layers, the unit every FeatConv path is made of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class FeatConvNeck(nn.Module):
    """Per-map conv pair -> bilinear x4 -> concatenation -> conv pair: (B, out_channels, 4h, 4w)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, mid_channels: int = 128) -> None:
        super().__init__()
        widths = [int(c) for c in in_channels]
        self.branches = nn.ModuleList(conv_bn_relu_pair(c, mid_channels) for c in widths)
        self.fuse = conv_bn_relu_pair(mid_channels * len(widths), out_channels)
        self.in_channels: list[int] = widths
        self.out_channels: int = out_channels

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.branches):
            raise ValueError(f"FeatConvNeck expects {len(self.branches)} maps, got {len(features)}")
        grids = {tuple(f.shape[-2:]) for f in features}
        if len(grids) != 1:
            raise ValueError(f"FeatConvNeck inputs must share one spatial size, got {sorted(grids)}")
        upsampled = [
            F.interpolate(branch(f), scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)
            for branch, f in zip(self.branches, features)
        ]
        return self.fuse(torch.cat(upsampled, dim=1))
