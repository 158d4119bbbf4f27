"""What a dense task is to this suite: its target, the channels it predicts, its loss, its metrics, its chance
level and how its predictions are stored and drawn. Built-in tasks and a user's own (docs/extending.md) are
instances of `Task`; the loop, the losses, the metrics, the writers and the panels read every fact from here.

A target is one of two kinds (`index_map`): an int64 (H, W) class map with IGNORE_INDEX where unlabelled, or a
float32 (target_channels, H, W) map with IGNORE_INDEX where invalid. A subclass sets the class attributes and
`loss`; everything else has a default for its kind that a subclass may replace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.metrics.dense import Metric
from demt_exp.viz.panels import colour_depth, colour_labels, colour_normals, label_png

TASK_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Task:
    """One dense task. `output_channels=None`: the data set's class count (`dataset.num_semseg_classes`)."""

    name: ClassVar[str] = ""
    index_map: ClassVar[bool] = False  # an int64 (H, W) class map; else a float32 (target_channels, H, W) map
    target_channels: ClassVar[int] = 1
    output_channels: ClassVar[int | None] = 1
    regression: ClassVar[bool] = False  # a Gaussian likelihood (uncertainty weighting's 1/2) or a categorical one
    metrics: ClassVar[tuple[type[Metric], ...]] = ()

    def loss(self, pred: Tensor, target: Tensor, **options: Any) -> Tensor:
        """The unweighted loss of a batch: pred (B, C, H, W), target as the kind says; `options` come from
        `tasks.loss.options.<task>`."""
        raise NotImplementedError(f"task {self.name!r} defines no loss")

    def channels(self, num_classes: int) -> int:
        return self.output_channels or int(num_classes)

    def target_shape(self, height: int, width: int) -> tuple[torch.dtype, tuple[int, ...]]:
        """The dtype and shape a data set item holds for this task (data/contract.py)."""
        if self.index_map:
            return torch.int64, (height, width)
        return torch.float32, (self.target_channels, height, width)

    def constant(self, labels: Sequence[Tensor], channels: int) -> Tensor:
        """The chance-level prediction (one value per output channel) fitted on training labels: class log
        frequencies of a class map, the valid mean of any other map."""
        if self.index_map:
            return class_log_frequencies(labels, channels)
        return valid_mean(labels)

    def predicted_map(self, pred: Tensor) -> np.ndarray:
        """What the task's file stores for one image's (C, H, W) output: class indices (uint8) of a class map,
        else the values themselves ((H, W) for one channel)."""
        pred = pred.detach().float().cpu()
        if self.index_map:
            return pred.argmax(0).numpy().astype(np.uint8)
        return (pred[0] if pred.shape[0] == 1 else pred).numpy()

    def display_range(self, pred: Tensor, target: Tensor | None) -> tuple[float, float] | None:
        """One colour range for a panel's one-channel prediction and its ground truth: the labelled values'
        if known, else the prediction's; None (class maps, vectors): each picture its own colours."""
        if self.index_map or pred.shape[0] != 1:
            return None
        source = pred.detach().float()
        if target is not None:
            labelled = target[target != IGNORE_INDEX]
            source = labelled if labelled.numel() else source
        return float(source.min()), float(source.max())

    def prediction_rgb(self, values: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
        """`predicted_map` as an RGB picture (H, W, 3) uint8."""
        if self.index_map:
            return colour_labels(values)
        if values.ndim == 3:
            return colour_normals(values) if values.shape[0] == 3 else colour_values(values[0], limits)
        return colour_values(values, limits)

    def target_rgb(self, target: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
        """A label map ((H, W), or (C, H, W) for C > 1) as an RGB picture; unlabelled pixels black (class maps:
        the palette's grey)."""
        if self.index_map:
            return colour_labels(target)
        if target.ndim == 3 and target.shape[0] == 3:
            return colour_normals(target, valid=(target != IGNORE_INDEX).all(axis=0))
        values = target[0] if target.ndim == 3 else target
        valid = values != IGNORE_INDEX
        if limits is None and valid.any():
            limits = float(values[valid].min()), float(values[valid].max())
        return colour_values(values, limits, valid)

    def save(self, values: np.ndarray, stem: Path) -> list[Path]:
        """One image's `predicted_map` as files: a palette PNG of class indices for a class map; a PNG
        picture and the raw float32 values (`.npy`) otherwise."""
        png = stem.with_suffix(".png")
        if self.index_map:
            label_png(values).save(png)
            return [png]
        Image.fromarray(self.prediction_rgb(values)).save(png)
        np.save(stem.with_suffix(".npy"), values.astype(np.float32))
        return [png, stem.with_suffix(".npy")]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def colour_values(
    values: np.ndarray, limits: tuple[float, float] | None, valid: np.ndarray | None = None
) -> np.ndarray:
    """A one-channel map over `limits` (default: its own range) in the depth colours."""
    low, high = limits or ((float(values.min()), float(values.max())) if values.size else (0.0, 1.0))
    return colour_depth(values, low, high, valid)


def class_log_frequencies(labels: Sequence[Tensor], num_classes: int) -> Tensor:
    """Log of the (add-one smoothed) class frequencies of index maps, ignoring IGNORE_INDEX."""
    counts = torch.ones(num_classes, dtype=torch.float64)
    for label in labels:
        valid = label[label != IGNORE_INDEX]
        counts += torch.bincount(valid.flatten().long(), minlength=num_classes)[:num_classes].double()
    return (counts / counts.sum()).log().float()


def valid_mean(maps: Sequence[Tensor]) -> Tensor:
    """Per-channel mean of (C, H, W) maps over pixels where no channel is IGNORE_INDEX."""
    total: Tensor | float = 0.0
    count = 0
    for m in maps:
        valid = (m != IGNORE_INDEX).all(dim=0)
        total = total + m[:, valid].double().sum(dim=1)
        count += int(valid.sum())
    return (torch.as_tensor(total) / max(count, 1)).float()
