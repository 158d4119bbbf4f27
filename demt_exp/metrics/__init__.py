"""Evaluation metrics, one module per family: dense per-pixel metrics (`dense`, `depth`, `normals`,
`saliency`), the SEISM boundary evaluation (`boundary` with its protocol, pooling, thinning, NMS
and matching parts), the per-run container (`registry`) and the multi-task delta (`delta_m`)."""

from __future__ import annotations

import importlib
from typing import Any

# Each name loads its module on first use (PEP 562), so a light user of one module (e.g. `delta_m` for its
# metric sets) does not import torch and every metric family with the package.
_HOME = {
    "BoundaryCounter": "demt_exp.metrics.boundary.parallel",
    "BoundaryMetric": "demt_exp.metrics.boundary.counts",
    "BoundaryProtocol": "demt_exp.metrics.boundary.protocol",
    "DepthRMSE": "demt_exp.metrics.dense",
    "DepthRelativeErrors": "demt_exp.metrics.depth",
    "EdgePixelMaxF": "demt_exp.metrics.dense",
    "MaxF": "demt_exp.metrics.dense",
    "MeanIoU": "demt_exp.metrics.dense",
    "Metric": "demt_exp.metrics.dense",
    "MetricContext": "demt_exp.metrics.registry",
    "MultiTaskMetrics": "demt_exp.metrics.registry",
    "NormalsAngleDistribution": "demt_exp.metrics.normals",
    "NormalsMeanAngle": "demt_exp.metrics.dense",
    "SaliencyMeanIoU": "demt_exp.metrics.saliency",
    "atrc_protocol": "demt_exp.metrics.boundary.protocol",
    "boundary_protocol": "demt_exp.metrics.boundary.protocol",
    "evaluate_boundaries": "demt_exp.metrics.boundary.parallel",
    "gt_boundary_map": "demt_exp.metrics.boundary.counts",
    "image_counts": "demt_exp.metrics.boundary.counts",
    "invpt_protocol": "demt_exp.metrics.boundary.protocol",
    "png_values": "demt_exp.metrics.boundary.counts",
}

__all__ = [
    "BoundaryCounter",
    "BoundaryMetric",
    "BoundaryProtocol",
    "DepthRMSE",
    "DepthRelativeErrors",
    "EdgePixelMaxF",
    "MaxF",
    "MeanIoU",
    "Metric",
    "MetricContext",
    "MultiTaskMetrics",
    "NormalsAngleDistribution",
    "NormalsMeanAngle",
    "SaliencyMeanIoU",
    "atrc_protocol",
    "boundary_protocol",
    "evaluate_boundaries",
    "gt_boundary_map",
    "image_counts",
    "invpt_protocol",
    "png_values",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'demt_exp.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
