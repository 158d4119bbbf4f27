"""Per-task prediction heads: bottleneck, logits and upsampling to the input size (SPEC 1.5.1 steps 5-6)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.recompute import recompute_around_norm, recompute_in_backward, wants_recompute


class Bottleneck(nn.Sequential):
    """3x3 conv (no bias) + BatchNorm + ReLU (official `bottleneck[t]`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class TaskHeads(nn.Module):
    """{task: (B, dim, h, w)} -> {task: (B, C_t, H, W)}; logits initialised N(0, 0.01^2), bias 0.

    `activation_checkpointing` recomputes each bottleneck and logits conv in the backward pass."""

    def __init__(
        self,
        task_channels: Mapping[str, int],
        in_channels: int,
        bottleneck_channels: int,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.tasks = tuple(task_channels)
        self.activation_checkpointing = activation_checkpointing
        self.bottleneck = nn.ModuleDict({t: Bottleneck(in_channels, bottleneck_channels) for t in self.tasks})
        self.logits = nn.ModuleDict({t: nn.Conv2d(bottleneck_channels, c, 1) for t, c in task_channels.items()})
        for conv in self.logits.values():
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.fast = True  # False: the plain bottleneck, which saves the ReLU's output for the logits too

    def task_logits(self, task: str, features: torch.Tensor) -> torch.Tensor:
        """(B, C_t, h, w) logits of one task at the feature resolution. Fast (training): the BatchNorm and the
        ReLU are recomputed in backward from the 3x3 convolution's output, so the ReLU's output (the logits'
        input) is not saved (models/recompute.py)."""
        bottleneck, logits = self.bottleneck[task], self.logits[task]
        if not self.fast:
            return logits(bottleneck(features))
        conv_out = bottleneck.conv(features)
        return recompute_around_norm(bottleneck.bn, lambda x: logits(bottleneck.relu(bottleneck.bn(x))), conv_out)

    def forward(self, features: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        recompute = wants_recompute(self.activation_checkpointing)
        out = {}
        for t in self.tasks:
            logits = (
                recompute_in_backward(self.bottleneck[t], self.task_logits, t, features[t])
                if recompute
                else self.task_logits(t, features[t])
            )
            out[t] = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return out
