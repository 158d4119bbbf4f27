"""Evaluation metrics, one module per family: dense per-pixel metrics (`dense`, `depth`, `normals`,
`saliency`), the SEISM boundary evaluation (`boundary` with its protocol, pooling, thinning, NMS
and matching parts), the per-task list (`registry`) and the multi-task delta (`delta_m`)."""

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
    NormalsMeanAngle,
)
from demt_exp.metrics.depth import DepthRelativeErrors
from demt_exp.metrics.normals import NormalsAngleDistribution
from demt_exp.metrics.registry import TASK_METRICS, MetricContext, MultiTaskMetrics
from demt_exp.metrics.saliency import SaliencyMeanIoU

__all__ = [
    "BoundaryCounter", "BoundaryMetric", "BoundaryProtocol", "DepthRMSE", "DepthRelativeErrors", "EdgePixelMaxF",
    "MaxF", "MeanIoU", "Metric", "MetricContext", "MultiTaskMetrics", "NormalsAngleDistribution", "NormalsMeanAngle",
    "SaliencyMeanIoU", "TASK_METRICS", "atrc_protocol", "boundary_protocol", "evaluate_boundaries",
    "gt_boundary_map", "image_counts", "invpt_protocol", "png_values",
]
