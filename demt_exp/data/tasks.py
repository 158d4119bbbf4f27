"""Task registry: one place that says how each dense task's targets and outputs look.

Every dataset, loss, metric and head reads these facts from here, so a batch and a
prediction have one representation everywhere (SPEC 1.1, 2, 3).

Batch layout (a dict of tensors, B images of H x W):
  image        float32 (B, 3, H, W), ImageNet-normalised RGB
  semseg       int64   (B, H, W)     class index, IGNORE_INDEX = ignore
  human_parts  int64   (B, H, W)     0 background, 1..6 parts, IGNORE_INDEX = ignore
  sal          int64   (B, H, W)     0/1, IGNORE_INDEX = ignore
  depth        float32 (B, 1, H, W)  metres, IGNORE_INDEX = invalid
  normals      float32 (B, 3, H, W)  unit vectors, IGNORE_INDEX on all channels = invalid
  edge         float32 (B, 1, H, W)  0/1, IGNORE_INDEX = ignore
  meta         {"id": list[str], "size": (B, 2) int64 original (H, W),
                "pad": (B, 2) int64 (top, left) offset of the centred padding (real datasets)}
Predictions: {task: float32 (B, output_channels, H, W)} raw logits / regressions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

IGNORE_INDEX = 255

TASK_NAMES: tuple[str, ...] = ("semseg", "human_parts", "sal", "normals", "edge", "depth")


@dataclass(frozen=True)
class TaskSpec:
    """How one task's target is stored and how many channels the network predicts."""

    name: str
    is_index_map: bool  # (B, H, W) int64 target instead of (B, C, H, W) float32
    target_channels: int
    fixed_output_channels: int | None  # None: the dataset's class count decides


TASKS: Mapping[str, TaskSpec] = {
    "semseg": TaskSpec("semseg", True, 1, None),
    "human_parts": TaskSpec("human_parts", True, 1, 7),
    "sal": TaskSpec("sal", True, 1, 2),
    "normals": TaskSpec("normals", False, 3, 3),
    "edge": TaskSpec("edge", False, 1, 1),
    "depth": TaskSpec("depth", False, 1, 1),
}


def task_spec(name: str) -> TaskSpec:
    """Look a task up, failing with the list of known tasks on a typo."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


def output_channels(names: list[str] | tuple[str, ...], num_semseg_classes: int) -> dict[str, int]:
    """Channels the network predicts per task (SPEC 1.1 `task_channel_mapping`)."""
    channels: dict[str, int] = {}
    for name in names:
        spec = task_spec(name)
        channels[name] = spec.fixed_output_channels or num_semseg_classes
    return channels


def squeeze_index_map(target: Tensor) -> Tensor:
    """Accept (B, H, W) or (B, 1, H, W) index/label maps and return (B, H, W)."""
    if target.dim() == 4 and target.shape[1] == 1:
        return target.squeeze(1)
    return target
