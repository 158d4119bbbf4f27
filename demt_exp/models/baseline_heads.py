"""Baseline decoder: nothing between the shared encoder and the per-task FCN heads (SPEC 8 item 28).

ATRC's FCNHead per task is 3x3 conv C_in -> C_in/4, BN, ReLU, then 1x1 logits; with the
concatenated backbone maps as input that is exactly our task heads with a bottleneck of C_in/4.
One task gives the single-task baseline, all tasks the shared-encoder multi-task baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PassThroughDecoder(nn.Module):
    """No cross-task block: each task's features go straight to its head."""

    def __init__(self, tasks: Sequence[str], bottleneck_divisor: int = 4) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.bottleneck_divisor = bottleneck_divisor

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: features[t] for t in self.tasks}
