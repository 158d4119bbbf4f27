"""Evaluation metrics, one module per family: dense per-pixel metrics (`dense`) and the SEISM
boundary evaluation (`boundary` with its protocol, pooling, thinning, NMS and matching parts);
multi-task delta metrics join them as their own module."""

from demt_exp.metrics.boundary import (
    BoundaryMetric,
    gt_boundary_map,
    image_counts,
    png_values,
)
from demt_exp.metrics.boundary_parallel import BoundaryCounter, evaluate_boundaries
from demt_exp.metrics.boundary_protocol import (
    BoundaryProtocol,
    atrc_protocol,
    boundary_protocol,
    invpt_protocol,
)
from demt_exp.metrics.dense import (
    DepthRMSE,
    EdgePixelMaxF,
    MaxF,
    MeanIoU,
    Metric,
    MultiTaskMetrics,
    NormalsMeanAngle,
)

__all__ = [
    "BoundaryCounter",
    "BoundaryMetric",
    "BoundaryProtocol",
    "DepthRMSE",
    "EdgePixelMaxF",
    "MaxF",
    "MeanIoU",
    "Metric",
    "MultiTaskMetrics",
    "NormalsMeanAngle",
    "atrc_protocol",
    "boundary_protocol",
    "evaluate_boundaries",
    "gt_boundary_map",
    "image_counts",
    "invpt_protocol",
    "png_values",
]
