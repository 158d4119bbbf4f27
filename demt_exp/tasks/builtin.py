"""The six tasks of the papers (SPEC 1.1, 2, 4): their losses, metrics, chance levels and prediction files.

The files are those the official code and SEISM read: class-index palette PNGs, saliency and edges as 8-bit
grey 255 * probability (truncated, as the official code saves edges), depth as a colour PNG beside the raw
metres, normals as RGB = (unit vector + 1) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from demt_exp.data.crop import edge_uint8
from demt_exp.data.tasks import HUMAN_PARTS_CLASSES, IGNORE_INDEX
from demt_exp.losses.task_losses import (
    balanced_cross_entropy_loss,
    cross_entropy_loss,
    depth_loss,
    edge_loss,
    normals_loss,
)
from demt_exp.metrics.boundary.edge_task import EdgeBoundary
from demt_exp.metrics.dense import DepthRMSE, EdgePixelMaxF, MaxF, MeanIoU, Metric, PartsMeanIoU
from demt_exp.metrics.depth import DepthRelativeErrors
from demt_exp.metrics.normals import NormalsAngleDistribution
from demt_exp.metrics.saliency import SaliencyMeanIoU
from demt_exp.tasks.base import Task, valid_mean
from demt_exp.viz.panels import colour_depth, colour_normals, grey


class Semseg(Task):
    name = "semseg"
    index_map = True
    output_channels = None
    metrics: ClassVar[tuple[type[Metric], ...]] = (MeanIoU,)

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        return cross_entropy_loss(pred, target)


class HumanParts(Semseg):
    name = "human_parts"
    output_channels = HUMAN_PARTS_CLASSES
    metrics: ClassVar[tuple[type[Metric], ...]] = (PartsMeanIoU,)


class _Probability(Task):
    """Saliency and edges: stored and drawn as 8-bit grey probability; ignored labels dark red in a panel."""

    def prediction_rgb(self, values: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
        return grey(values)

    def target_rgb(self, target: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
        valid = target != IGNORE_INDEX
        rgb = grey(np.where(valid, target * 255.0, 0).clip(0, 255))  # 0/1 labels
        rgb[~valid] = (128, 0, 0)
        return rgb

    def save(self, values: np.ndarray, stem: Path) -> list[Path]:
        png = stem.with_suffix(".png")
        Image.fromarray(values, mode="L").save(png)
        return [png]


class Saliency(_Probability):
    name = "sal"
    index_map = True
    output_channels = 2
    metrics: ClassVar[tuple[type[Metric], ...]] = (MaxF, SaliencyMeanIoU)

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        return balanced_cross_entropy_loss(pred, target)

    def predicted_map(self, pred: Tensor) -> np.ndarray:
        pred = pred.detach().float().cpu()
        prob = torch.softmax(pred, 0)[1] if pred.shape[0] == 2 else torch.sigmoid(pred[0])
        return (255.0 * prob).to(torch.uint8).numpy()


class Edge(_Probability):
    name = "edge"
    # EdgeBoundary (SEISM odsF/oisF/AP) runs only where the evaluation asks for it.
    metrics: ClassVar[tuple[type[Metric], ...]] = (EdgePixelMaxF, EdgeBoundary)

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        if options.get("pos_weight") is None:
            raise ValueError("edge is weighted in the loss but edge_pos_weight was not given")
        return edge_loss(pred, target, float(options["pos_weight"]))

    def constant(self, labels: Sequence[Tensor], channels: int) -> Tensor:
        """The logit of the edge rate."""
        rate = float(valid_mean(labels).clamp(1e-4, 1 - 1e-4))
        return torch.tensor([math.log(rate / (1 - rate))])

    def predicted_map(self, pred: Tensor) -> np.ndarray:
        return edge_uint8(pred.detach().float().cpu()[0]).numpy()


class Normals(Task):
    name = "normals"
    target_channels = 3
    output_channels = 3
    regression = True
    metrics: ClassVar[tuple[type[Metric], ...]] = (NormalsAngleDistribution,)  # mean_angle and the rest

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        return normals_loss(pred, target)

    def constant(self, labels: Sequence[Tensor], channels: int) -> Tensor:
        """The mean normal, made a unit vector."""
        mean = valid_mean(labels)
        return mean / mean.norm().clamp_min(1e-12)

    def save(self, values: np.ndarray, stem: Path) -> list[Path]:
        png = stem.with_suffix(".png")
        Image.fromarray(colour_normals(values)).save(png)
        return [png]


class Depth(Task):
    """Files as every float map's (Task.save): a colour PNG over the image's own range and the metres in .npy."""

    name = "depth"
    regression = True
    metrics: ClassVar[tuple[type[Metric], ...]] = (DepthRMSE, DepthRelativeErrors)

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        return depth_loss(pred, target)

    def predicted_map(self, pred: Tensor) -> np.ndarray:
        return pred.detach().float().cpu()[0].clamp_min(0).numpy()

    def display_range(self, pred: Tensor, target: Tensor | None) -> tuple[float, float]:
        """The labelled depths if known, else the prediction's."""
        source = pred.detach().float().clamp_min(0)
        if target is not None:
            labelled = target[(target != IGNORE_INDEX) & (target != 0)]
            source = labelled if labelled.numel() else source
        return float(source.min()), float(source.max())

    def target_rgb(self, target: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
        valid = (target != IGNORE_INDEX) & (target != 0)
        low, high = limits or (float(target[valid].min(initial=0)), float(target[valid].max(initial=1)))
        return colour_depth(target, low, high, valid)


BUILTIN_TASKS: tuple[Task, ...] = (Semseg(), HumanParts(), Saliency(), Normals(), Edge(), Depth())
