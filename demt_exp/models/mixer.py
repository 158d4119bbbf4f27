"""The deformable mixer block of DeMT's encoder (SPEC 1.5.2, order of the latest release)."""

from __future__ import annotations

import torch
from torch import nn

from demt_exp.models.deform import ChannelDeformConv
from demt_exp.models.recompute import recompute_around_norm


def act_then_norm(act: nn.Module, norm: nn.Module, x: torch.Tensor, lean: bool) -> torch.Tensor:
    """norm(act(x)); lean (training): only x is saved for backward, the GELU and the BatchNorm are recomputed
    there (elementwise work and the batch statistics, no matrix product; models/recompute.py), instead of
    saving the GELU's output as well: one map fewer per pair."""
    if lean:
        return recompute_around_norm(norm, lambda t: norm(act(t)), x)
    return norm(act(x))


class DeformableMixerBlock(nn.Module):
    """Channel mixing (1x1 conv, GELU, BN), then a residual deformable spatial branch (ChlSpl, GELU, BN)."""

    def __init__(self, dim: int, deform_backend: str = "auto", recompute_offsets: bool = True) -> None:
        super().__init__()
        self.channel_mix = nn.Conv2d(dim, dim, kernel_size=1)
        self.channel_act = nn.GELU()
        self.channel_norm = nn.BatchNorm2d(dim)
        self.spatial_mix = ChannelDeformConv(dim, dim, deform_backend, recompute_offsets)
        self.spatial_act = nn.GELU()
        self.spatial_norm = nn.BatchNorm2d(dim)
        self.fast = True  # False: the plain pairs, which save each GELU's output for its BatchNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = act_then_norm(self.channel_act, self.channel_norm, self.channel_mix(x), self.fast)
        return x + act_then_norm(self.spatial_act, self.spatial_norm, self.spatial_mix(x), self.fast)


class DeformableMixer(nn.Sequential):
    """`depth` mixer blocks in sequence: one per task in DeMT (depth 1), DeGMix uses depth 2."""

    def __init__(self, dim: int, depth: int = 1, deform_backend: str = "auto", recompute_offsets: bool = True) -> None:
        super().__init__(*(DeformableMixerBlock(dim, deform_backend, recompute_offsets) for _ in range(depth)))
