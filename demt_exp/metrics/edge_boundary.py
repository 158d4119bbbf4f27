"""The SEISM boundary metric as a metric of the edge task: each image's edge map cropped to its
original size and quantised as the official code writes its PNGs, matched against the ground-truth
boundary map built from the edge label as SEISM's NYUD reader does (`gt_boundary_map`).

It runs where the evaluation asks for it (`MetricContext.options["boundary"]`, set by
`python -m demt_exp.evaluate`), not in every validation of a training run. Only NYUD-v2 is wired:
SEISM scores PASCAL-Context against the region boundaries of the 459-class label map, which a
batch does not carry, so the metric refuses that data set rather than report another number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from demt_exp.crop import crop_to_original, edge_uint8
from demt_exp.metrics.boundary import BoundaryMetric, gt_boundary_map
from demt_exp.metrics.boundary_protocol import boundary_protocol

WIRED_DATASETS = ("nyud",)


class EdgeBoundary(BoundaryMetric):
    """odsF / oisF / AP of the edge task under the protocol named in the context's options."""

    @classmethod
    def from_context(cls, context: Any) -> "EdgeBoundary | None":
        settings = context.options.get("boundary")
        if not settings or context.dataset not in WIRED_DATASETS:
            return None  # not asked for, or no SEISM ground truth for this data set: edge keeps pixel_maxF only
        return cls(boundary_protocol(str(settings.get("protocol", "atrc")), str(context.dataset)))

    def update_from_batch(self, pred: Tensor, batch: Mapping[str, Any], task: str) -> None:
        meta = batch["meta"]
        for i in range(pred.shape[0]):
            edge = edge_uint8(crop_to_original(pred, meta, i)[0]).cpu().numpy()
            labels = crop_to_original(batch[task], meta, i)[0].cpu().numpy()
            self.update_image(edge, gt_boundary_map(labels))
