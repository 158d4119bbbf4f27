"""Encoders: multi-scale concat, projection to the head width, one deformable mixer per task.

SPEC 1.4 (head input transform), 1.5.1 steps 1-2 (DeMT) and 1.6.1 (DeGMix projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.linear import linear
from demt_exp.models.mixer import DeformableMixer
from demt_exp.models.necks import FeatConvNeck
from demt_exp.models.recompute import recompute_in_backward, wants_recompute

Projection = Literal["linear", "patch", "none"]
Neck = Literal["concat", "featconv"]


def concat_multiscale(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resize every map bilinearly to the first (stride-4) map's size and concatenate channels."""
    size = features[0].shape[-2:]
    resized = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]]
    return torch.cat(resized, dim=1)


def total_channels(in_channels: int | Sequence[int]) -> int:
    """Channels after concatenating the backbone maps."""
    return in_channels if isinstance(in_channels, int) else sum(int(c) for c in in_channels)


class PixelProjection(nn.Module):
    """Per-pixel Linear(C_in -> dim) then LayerNorm over channels (official `linear1`): stays at stride 4."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).contiguous()

    def forward_multiscale(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """forward(concat_multiscale(features)) without building the C_in-wide stride-4 map.

        A per-pixel linear map commutes with bilinear resizing (align_corners=False, no
        antialias: each output pixel is a fixed combination of input pixels with weights
        summing to 1), so each map is projected at its own resolution, then resized and
        summed; the bias and the LayerNorm then see the same values. Output is channels-last.
        """
        size = features[0].shape[-2:]
        weights = self.linear.weight.split([f.shape[1] for f in features], dim=1)
        total = None
        for feature, weight in zip(features, weights):
            projected = linear(feature.permute(0, 2, 3, 1), weight).permute(0, 3, 1, 2)
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            total = projected if total is None else total + projected
        assert total is not None
        return self.norm(total.permute(0, 2, 3, 1) + self.linear.bias).permute(0, 3, 1, 2).contiguous()


class PatchProjection(nn.Module):
    """Released DeGMix `PatchEmbed`: zero-pad to a multiple of 4, 4x4 stride-4 conv, LayerNorm: stride 16."""

    def __init__(self, in_channels: int, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad, 4x4 stride-4 conv: (B, C_in, H, W) -> (B, dim, ceil(H / 4), ceil(W / 4))."""
        pad_h = (self.patch - x.shape[-2] % self.patch) % self.patch
        pad_w = (self.patch - x.shape[-1] % self.patch) % self.patch
        return self.proj(F.pad(x, (0, pad_w, 0, pad_h)))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over channels of the embedded map."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class MultiScaleConcat(nn.Module):
    """SPEC 1.4 head input transform as a module: resize to the stride-4 map, concatenate."""

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return concat_multiscale(features)


PROJECTIONS: dict[str, type[nn.Module]] = {"linear": PixelProjection, "patch": PatchProjection}
NECKS: tuple[str, ...] = ("concat", "featconv")


def build_neck(neck: str, in_channels: int | Sequence[int], dim: int) -> tuple[nn.Module, int]:
    """The module that merges the backbone maps into one, and its output width."""
    if neck == "concat":
        return MultiScaleConcat(), total_channels(in_channels)
    if neck == "featconv":
        widths = [in_channels] * 4 if isinstance(in_channels, int) else list(in_channels)
        return FeatConvNeck(widths, out_channels=dim), dim
    raise ValueError(f"encoder.neck={neck!r}; expected one of {NECKS}")


def build_projection(projection: str, in_channels: int, dim: int) -> nn.Module:
    """Projection of the merged map to the head width; `none` when the neck already outputs it."""
    if projection == "none":
        if in_channels != dim:
            raise ValueError(f"encoder.projection=none needs the neck to output dim={dim} channels, not {in_channels}")
        return nn.Identity()
    if projection not in PROJECTIONS:
        raise ValueError(f"encoder.projection={projection!r}; expected one of {sorted(PROJECTIONS) + ['none']}")
    return PROJECTIONS[projection](in_channels, dim)


class DeformableMixerEncoder(nn.Module):
    """Backbone maps -> {task: (B, dim, h, w)}.

    DeMT: concat neck, linear projection, depth 1. DeGMix: concat neck, patch (released) or
    linear projection, depth 2. DeGMix ViT: FeatConv neck (already `dim` wide), no projection.
    `activation_checkpointing` recomputes each task's mixer in the backward pass; `recompute_offsets` rebuilds
    each ChlSpl's offsets and sampling grid there (models/deform.ChannelDeformConv).
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        tasks: Sequence[str],
        dim: int = 256,
        depth: int = 1,
        projection: Projection = "linear",
        neck: Neck = "concat",
        deform_backend: str = "auto",
        activation_checkpointing: bool = False,
        recompute_offsets: bool = True,
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.dim = dim
        self.activation_checkpointing = activation_checkpointing
        self.neck, neck_channels = build_neck(neck, in_channels, dim)
        self.projection = build_projection(projection, neck_channels, dim)
        self.mixers = nn.ModuleDict(
            {t: DeformableMixer(dim, depth, deform_backend, recompute_offsets) for t in self.tasks}
        )
        self.fast = True  # False: the plain formulation (concatenate, then project; the concatenation saved)

    def merge(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone maps -> one (B, dim, h, w) map."""
        concat = self.fast and isinstance(self.neck, MultiScaleConcat)
        if concat and isinstance(self.projection, PixelProjection):
            return self.projection.forward_multiscale(features)
        if concat and isinstance(self.projection, PatchProjection) and wants_recompute(True):
            # the C_in-wide stride-4 concatenation is rebuilt in backward (resizing, no product) rather than saved
            # for the 4x4 conv; checkpoint's early stop ends the rebuild at the conv's input, so the conv runs once
            return self.projection.normalise(recompute_in_backward(self.projection, self.concat_embed, *features))
        return self.projection(self.neck(features))

    def concat_embed(self, *features: torch.Tensor) -> torch.Tensor:
        """The patch projection's conv of the concatenated maps, before its LayerNorm."""
        return self.projection.embed(self.neck(features))

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.merge(features)
        if wants_recompute(self.activation_checkpointing):
            return {t: recompute_in_backward(self.mixers[t], self.mixers[t], x) for t in self.tasks}
        return {t: self.mixers[t](x) for t in self.tasks}


class ConcatEncoder(nn.Module):
    """Baselines' shared input: the concatenated multi-scale maps, handed unchanged to every task."""

    def __init__(self, in_channels: int | Sequence[int], tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.dim = total_channels(in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = concat_multiscale(features)
        return {t: x for t in self.tasks}
