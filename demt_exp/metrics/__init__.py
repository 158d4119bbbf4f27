"""Evaluation metrics, one module per family: dense per-pixel metrics (`dense`); boundary and
multi-task delta metrics join them as their own modules."""

from demt_exp.metrics.dense import (
    DepthRMSE,
    EdgePixelMaxF,
    MaxF,
    MeanIoU,
    Metric,
    MultiTaskMetrics,
    NormalsMeanAngle,
)

__all__ = ["DepthRMSE", "EdgePixelMaxF", "MaxF", "MeanIoU", "Metric", "MultiTaskMetrics", "NormalsMeanAngle"]
