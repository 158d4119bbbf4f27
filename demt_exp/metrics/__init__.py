"""Evaluation metrics, one module per family: dense per-pixel metrics (`dense`, `depth`, `normals`,
`saliency`), the per-task list (`registry`) and the multi-task delta (`delta_m`); the boundary
metric joins them as its own module."""

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
    "DepthRMSE", "DepthRelativeErrors", "EdgePixelMaxF", "MaxF", "MeanIoU", "Metric", "MetricContext",
    "MultiTaskMetrics", "NormalsAngleDistribution", "NormalsMeanAngle", "SaliencyMeanIoU", "TASK_METRICS",
]
