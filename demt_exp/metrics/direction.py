"""Which way is better for a metric: errors, distances and losses go down, scores go up."""

from __future__ import annotations

LOWER_IS_BETTER_MARKERS = ("loss", "rmse", "angle", "abs_rel", "log10", "median", "mean_error")


def lower_is_better(metric: str) -> bool:
    """`depth/rmse`, `normals/mean_angle`, `semseg/loss` -> True; `semseg/mIoU`, `edge/odsF` -> False."""
    name = metric.rsplit("/", 1)[-1].lower()
    return any(marker in name for marker in LOWER_IS_BETTER_MARKERS)
