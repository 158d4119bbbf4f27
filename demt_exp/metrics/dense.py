"""Dense per-pixel evaluation metrics pooled over a whole evaluation set (SPEC 4).

Each metric keeps every running sum in one 1-D float64 tensor `state`, so a distributed
caller can `all_reduce(state, SUM)` in place before `compute()`; pooled sums make the
result independent of how images are split over processes and batches. `state` follows
the device of the first `update` (CPU before any update; use `to(device)` to move it,
e.g. on a process that saw no data, before a NCCL all_reduce).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from demt_exp.data.tasks import HUMAN_PARTS_CLASSES, IGNORE_INDEX, squeeze_index_map
from demt_exp.utils.collectives import all_reduce_sum_

__all__ = [
    "Metric",
    "MeanIoU",
    "PartsMeanIoU",
    "DepthRMSE",
    "NormalsMeanAngle",
    "MaxF",
    "EdgePixelMaxF",
    "angular_error_degrees",
]


def _check_spatial(pred: Tensor, target: Tensor, name: str) -> None:
    """Metrics compare pixel by pixel: the caller must resize predictions to the labels."""
    if pred.dim() != 4 or pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"{name}: prediction {tuple(pred.shape)} does not match target {tuple(target.shape)} "
            "(expected (B, C, H, W) predictions at the label resolution)"
        )


class Metric:
    """Base class: a float64 sum vector `state`, updated per batch and reduced once."""

    higher_is_better: ClassVar[dict[str, bool]] = {}

    def __init__(self, state_size: int) -> None:
        self.state: Tensor = torch.zeros(state_size, dtype=torch.float64)

    def _accumulate(self, values: Tensor) -> None:
        """Add a batch's sums, moving the state to the batch's device if needed."""
        if self.state.device != values.device:
            self.state = self.state.to(values.device)
        self.state += values.to(torch.float64)

    def to(self, device: torch.device | str) -> Metric:
        """Move the state (e.g. to the NCCL device before an all_reduce)."""
        self.state = self.state.to(device)
        return self

    def reset(self) -> None:
        """Zero the sums, keeping the device."""
        self.state.zero_()

    def sync(self) -> None:
        """Pool the state over all processes (a no-op in one process); sums by default.

        A metric whose result is not a function of summed statistics (e.g. one that needs
        per-image values) overrides this to gather instead.
        """
        all_reduce_sum_(self.state)

    @classmethod
    def from_context(cls, context: Any) -> Metric:
        """Build from a `registry.MetricContext` (class count, dataset, options); most need nothing."""
        return cls()

    def update_from_batch(self, pred: Tensor, batch: Mapping[str, Any], task: str) -> None:
        """Update from the whole batch dict; metrics that need `meta` (ids, original sizes) override this."""
        self.update(pred, batch[task])

    def update(self, pred: Tensor, target: Tensor) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError


class MeanIoU(Metric):
    """Macro-averaged IoU and pixel accuracy from a pooled confusion matrix over pixels with gt != 255.

    Classes with an empty union (absent from both prediction and ground truth) give NaN,
    which counts as 0 and is still averaged (SPEC 4, oddity 21). Pixel accuracy is the
    trace over the total (NaN without valid pixels). The state is the row-major (gt, pred)
    confusion matrix, num_classes**2 entries.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"mIoU": True, "pixel_acc": True}

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        super().__init__(num_classes * num_classes)
        self.num_classes = num_classes

    @classmethod
    def from_context(cls, context: Any) -> MeanIoU:
        return cls(int(context.num_semseg_classes))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, C, H, W) logits; target: (B, H, W) int labels, 255 = ignore."""
        target = squeeze_index_map(target)
        _check_spatial(pred, target, "MeanIoU")
        if pred.shape[1] != self.num_classes:
            raise ValueError(f"MeanIoU: expected {self.num_classes} channels, got {pred.shape[1]}")
        labels = pred.argmax(dim=1)
        valid = target != IGNORE_INDEX
        gt = target[valid].long()
        if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= self.num_classes):
            raise ValueError(f"MeanIoU: labels outside [0, {self.num_classes}) that are not {IGNORE_INDEX}")
        index = gt * self.num_classes + labels[valid]
        self._accumulate(torch.bincount(index, minlength=self.num_classes**2))

    def compute(self) -> dict[str, float]:
        confusion = self.state.view(self.num_classes, self.num_classes)
        intersection = confusion.diagonal()
        union = confusion.sum(dim=0) + confusion.sum(dim=1) - intersection
        iou = torch.nan_to_num(intersection / union, nan=0.0)
        total = float(confusion.sum())
        pixel_acc = 100.0 * float(intersection.sum()) / total if total > 0 else math.nan
        return {"mIoU": 100.0 * float(iou.mean()), "pixel_acc": pixel_acc}


class DepthRMSE(Metric):
    """RMSE in metres pooled over every valid pixel of the set (not a per-image mean).

    Predictions are clamped to >= 0. Targets equal to 255 (ignore, including padding and
    missing depth relabelled from 0) or 0 are excluded (SPEC 4 with the fix of oddity 16).
    State: [sum of squared errors, pixel count]. NaN if no valid pixel was seen.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"rmse": False}

    def __init__(self) -> None:
        super().__init__(2)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (B, 1, H, W) depth in metres."""
        _check_spatial(pred, target, "DepthRMSE")
        if pred.shape != target.shape:
            raise ValueError(f"DepthRMSE: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
        valid = (target != IGNORE_INDEX) & (target != 0)
        err = pred.detach().double().clamp(min=0.0)[valid] - target.double()[valid]
        self._accumulate(torch.stack([err.square().sum(), valid.sum().double()]))

    def compute(self) -> dict[str, float]:
        sse, count = (float(v) for v in self.state)
        return {"rmse": math.sqrt(sse / count) if count > 0 else math.nan}


class PartsMeanIoU(MeanIoU):
    """MeanIoU over the 7 human-part classes (background and 6 part groups, SPEC 3.3)."""

    @classmethod
    def from_context(cls, context: Any) -> PartsMeanIoU:
        return cls(HUMAN_PARTS_CLASSES)


def _unit_or_zero(vectors: Tensor) -> Tensor:
    """Normalise along dim 1; zero vectors stay zero instead of becoming NaN."""
    norm = vectors.norm(dim=1, keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(vectors), vectors / torch.where(norm == 0, 1.0, norm))


def angular_error_degrees(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel angle (B, H, W) between raw predicted and target normals, and the valid mask.

    Uses 2*atan2(|p - t|, |p + t|) on unit vectors, a numerically stable arccos(p . t);
    valid pixels have all 3 target channels != 255.
    """
    _check_spatial(pred, target, "normals metric")
    if pred.shape[1] != 3 or target.shape[1] != 3:
        raise ValueError("normals metric: expected 3-channel prediction and target")
    valid = (target != IGNORE_INDEX).all(dim=1)
    p = _unit_or_zero(pred.detach().float())
    t = _unit_or_zero(target.float())
    return torch.rad2deg(2.0 * torch.atan2((p - t).norm(dim=1), (p + t).norm(dim=1))), valid


class NormalsMeanAngle(Metric):
    """Mean angular error in degrees over pixels whose 3 label channels are all != 255.

    State: [sum of angles in degrees, pixel count]. NaN if no valid pixel was seen.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"mean_angle": False}

    def __init__(self) -> None:
        super().__init__(2)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, 3, H, W) raw normals; target: (B, 3, H, W) unit vectors, 255 = invalid."""
        angle, valid = angular_error_degrees(pred, target)
        selected = angle[valid].double()
        self._accumulate(torch.stack([selected.sum(), valid.sum().double()]))

    def compute(self) -> dict[str, float]:
        total, count = (float(v) for v in self.state)
        return {"mean_angle": total / count if count > 0 else math.nan}


class MaxF(Metric):
    """Maximum F-beta (beta^2 = 0.3) over 19 thresholds 0.05..0.95, pooled over the set.

    TP, PP (predicted positives) and AP (actual positives) are summed over all valid
    pixels (gt != 255) of all images before P, R and F are formed, so this is not a mean
    of per-image scores (SPEC 4, oddity 20). A pixel is predicted positive when its
    probability is >= the threshold (as in the reference code). The class-1 probability
    is softmax over 2-channel logits or sigmoid of 1-channel logits, chosen by channel
    count; a label counts as positive when > 0.5 (labels are 0/1).
    State: [TP per threshold (19), PP per threshold (19), AP].
    """

    key: ClassVar[str] = "maxF"
    higher_is_better: ClassVar[dict[str, bool]] = {"maxF": True}
    NUM_THRESHOLDS: ClassVar[int] = 19

    def __init__(self, beta2: float = 0.3) -> None:
        super().__init__(2 * self.NUM_THRESHOLDS + 1)
        self.beta2 = float(beta2)
        self.thresholds = torch.arange(1, self.NUM_THRESHOLDS + 1, dtype=torch.float64) * 0.05

    @staticmethod
    def positive_probability(pred: Tensor) -> Tensor:
        """(B, 2, H, W) -> softmax class 1; (B, 1, H, W) -> sigmoid; returns (B, H, W)."""
        if pred.shape[1] == 2:
            return F.softmax(pred.float(), dim=1)[:, 1]
        if pred.shape[1] == 1:
            return torch.sigmoid(pred.float())[:, 0]
        raise ValueError(f"MaxF: expected 1- or 2-channel logits, got {pred.shape[1]} channels")

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, 1|2, H, W) logits; target: (B, H, W) or (B, 1, H, W) 0/1, 255 = ignore."""
        target = squeeze_index_map(target)
        _check_spatial(pred, target, type(self).__name__)
        prob = self.positive_probability(pred.detach())
        valid = target != IGNORE_INDEX
        prob = prob[valid]
        positive = target[valid] > 0.5
        # idx = number of thresholds <= prob, so prob >= thresholds[k] iff idx > k.
        thresholds = self.thresholds.to(device=prob.device, dtype=prob.dtype)
        idx = torch.bucketize(prob, thresholds, right=True)
        n = self.NUM_THRESHOLDS

        def at_or_above(indices: Tensor) -> Tensor:
            counts = torch.bincount(indices, minlength=n + 1)
            return counts.flip(0).cumsum(0).flip(0)[1:]

        tp = at_or_above(idx[positive])
        pp = at_or_above(idx)
        ap = positive.sum().reshape(1)
        self._accumulate(torch.cat([tp, pp, ap]))

    def compute(self) -> dict[str, float]:
        n = self.NUM_THRESHOLDS
        tp, pp, ap = self.state[:n], self.state[n : 2 * n], self.state[2 * n]
        precision = tp / pp
        recall = tp / ap
        f = (1.0 + self.beta2) * precision * recall / (self.beta2 * precision + recall)
        f = torch.nan_to_num(f, nan=0.0)
        return {self.key: 100.0 * float(f.max())}


class EdgePixelMaxF(MaxF):
    """Pixel-level MaxF of sigmoid edge probabilities against the edge labels.

    A cheap in-training proxy only: it has no boundary-matching tolerance, so it is NOT
    the SEISM odsF (maxDist 0.011 / 0.0075) reported in the papers, and the numbers are
    not comparable with them.
    """

    key: ClassVar[str] = "pixel_maxF"
    higher_is_better: ClassVar[dict[str, bool]] = {"pixel_maxF": True}
