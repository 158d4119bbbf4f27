"""DeMT encoder: multi-scale concat, projection to the head width, one deformable mixer per task.

SPEC 1.4 (head input transform) and 1.5.1 steps 1-2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.mixer import DeformableMixer


def concat_multiscale(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resize every map bilinearly to the first (stride-4) map's size and concatenate channels."""
    size = features[0].shape[-2:]
    resized = [features[0]] + [
        F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
    ]
    return torch.cat(resized, dim=1)


class PixelProjection(nn.Module):
    """Per-pixel Linear(C_in -> dim) then LayerNorm over channels (official `linear1`)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).contiguous()


class DeformableMixerEncoder(nn.Module):
    """Backbone maps -> {task: (B, dim, h, w)} on the stride-4 grid."""

    def __init__(
        self,
        in_channels: int,
        tasks: Sequence[str],
        dim: int = 256,
        depth: int = 1,
        deform_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.dim = dim
        self.projection = PixelProjection(in_channels, dim)
        self.mixers = nn.ModuleDict({t: DeformableMixer(dim, depth, deform_backend) for t in self.tasks})

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.projection(concat_multiscale(features))
        return {t: self.mixers[t](x) for t in self.tasks}
