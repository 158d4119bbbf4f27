"""The batch layout every dataset, loss, metric and head shares, so a batch and a prediction have one
representation everywhere (SPEC 1.1, 2, 3). What each task is (loss, metrics, files): demt_exp/tasks.

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
  <task>       a task of one's own (demt_exp/tasks/base.py): int64 (B, H, W) or float32 (B, C, H, W)
Predictions: {task: float32 (B, output_channels, H, W)} raw logits / regressions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

IGNORE_INDEX = 255
HUMAN_PARTS_CLASSES = 7  # background and six part groups (SPEC 3.3)

# The tasks of the papers; their targets, losses, metrics and files: demt_exp/tasks/builtin.py.
TASK_NAMES: tuple[str, ...] = ("semseg", "human_parts", "sal", "normals", "edge", "depth")


def squeeze_index_map(target: Tensor) -> Tensor:
    """Accept (B, H, W) or (B, 1, H, W) index/label maps and return (B, H, W)."""
    if target.dim() == 4 and target.shape[1] == 1:
        return target.squeeze(1)
    return target
