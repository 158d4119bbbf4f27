"""Per-task training losses and their weighted sum (SPEC 2).

Every loss is a mean over the valid pixels V of the whole (per-process) batch, where
IGNORE_INDEX marks invalid labels. Half-precision inputs are upcast to float32 so sums
over millions of pixels stay accurate (float32 and float64 are left as they are). A batch
with no valid pixel gives a zero that is still connected to the prediction, so backward
and DDP gradient reduction keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from demt_exp.data.tasks import IGNORE_INDEX, squeeze_index_map
from demt_exp.tasks.registry import get_task, known_tasks

__all__ = [
    "cross_entropy_loss",
    "balanced_cross_entropy_loss",
    "normals_loss",
    "depth_loss",
    "edge_loss",
    "MultiTaskLoss",
    "weighted_sum",
]


def _index_target(target: Tensor) -> Tensor:
    """Cross-entropy needs (B, H, W) int64 targets."""
    return squeeze_index_map(target).long()


def _check_spatial(pred: Tensor, target: Tensor, task: str) -> None:
    """Losses are defined at label resolution: a size mismatch is a caller bug."""
    if pred.dim() != 4 or pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"{task}: prediction {tuple(pred.shape)} does not match target {tuple(target.shape)} "
            "(expected (B, C, H, W) predictions at the label resolution)"
        )


def _upcast(tensor: Tensor) -> Tensor:
    """Half-precision inputs to float32; float32/float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _valid_mean(total: Tensor, n_valid: Tensor) -> Tensor:
    """Divide by |V| without a host sync; an empty V leaves the (zero) sum unchanged."""
    return total / n_valid.clamp(min=1).to(total.dtype)


def cross_entropy_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy averaged over pixels with label != IGNORE_INDEX (semseg, human_parts).

    Summed then divided by |V| explicitly, because F.cross_entropy's 'mean' is NaN on an
    all-ignored batch.
    """
    target = _index_target(target)
    _check_spatial(pred, target, "cross-entropy")
    pred = _upcast(pred)
    per_pixel = F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="none")
    return _valid_mean(per_pixel.sum(), (target != IGNORE_INDEX).sum())


def balanced_cross_entropy_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Batch-balanced two-class cross-entropy for saliency (SPEC 2, oddity 19).

    w_pos = (#valid negatives)/|V| on this batch, class weights (1 - w_pos, w_pos) for
    classes (0, 1); the weighted sum is divided by the pixel count |V|, not by the sum of
    the weights, as in the reference implementation.
    """
    target = _index_target(target)
    _check_spatial(pred, target, "sal")
    pred = _upcast(pred)
    if pred.shape[1] != 2:
        raise ValueError(f"sal: expected 2-channel logits, got {pred.shape[1]} channels")
    valid = target != IGNORE_INDEX
    n_valid = valid.sum()
    n_neg = (valid & (target == 0)).sum()
    w_pos = n_neg.to(pred.dtype) / n_valid.clamp(min=1).to(pred.dtype)
    # Ignored pixels get CE 0 from ignore_index; their weight is irrelevant.
    pixel_weight = torch.where(target == 1, w_pos, 1.0 - w_pos)
    per_pixel = F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="none")
    return _valid_mean((pixel_weight * per_pixel).sum(), n_valid)


def normals_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between the L2-normalised prediction and the label, per valid pixel.

    The three component errors are summed and the total divided by the number of valid
    pixels (not of valid components); a pixel is valid when all 3 label channels != 255.
    """
    _check_spatial(pred, target, "normals")
    pred, target = _upcast(pred), _upcast(target)
    n_hat = F.normalize(pred, p=2.0, dim=1, eps=1e-12)
    valid = (target != IGNORE_INDEX).all(dim=1, keepdim=True)
    abs_err = torch.where(valid, (n_hat - target).abs(), torch.zeros((), dtype=n_hat.dtype, device=n_hat.device))
    return _valid_mean(abs_err.sum(), valid.sum())


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 depth error averaged over pixels with label != IGNORE_INDEX; no clamping in training."""
    _check_spatial(pred, target, "depth")
    pred, target = _upcast(pred), _upcast(target)
    valid = target != IGNORE_INDEX
    abs_err = torch.where(valid, (pred - target).abs(), torch.zeros((), dtype=pred.dtype, device=pred.device))
    return _valid_mean(abs_err.sum(), valid.sum())


def edge_loss(pred: Tensor, target: Tensor, pos_weight: float) -> Tensor:
    """Balanced BCE with a fixed positive weight w (0.8 NYUD, 0.95 PASCAL).

    (1/|V|) sum_V [-w y log s(z) - (1-w)(1-y) log(1-s(z))], evaluated stably as
    BCE-with-logits with pos_weight w/(1-w) scaled by (1-w).
    """
    if not 0.0 < pos_weight < 1.0:
        raise ValueError(f"edge pos_weight must lie in (0, 1), got {pos_weight}")
    _check_spatial(pred, target, "edge")
    pred = _upcast(pred)
    valid = target != IGNORE_INDEX
    # Replace ignored labels by 0 so the masked-out terms stay finite.
    y = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device)).to(pred.dtype)
    ratio = torch.tensor(pos_weight / (1.0 - pos_weight), dtype=pred.dtype, device=pred.device)
    per_pixel = F.binary_cross_entropy_with_logits(pred, y, pos_weight=ratio, reduction="none")
    per_pixel = torch.where(valid, per_pixel, torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device))
    return _valid_mean(per_pixel.sum(), valid.sum()) * (1.0 - pos_weight)


def weighted_sum(weights: Mapping[str, float], losses: Mapping[str, Tensor]) -> Tensor:
    """sum_t w_t L_t in the order of `weights` (the one place the fixed total is formed)."""
    total: Tensor | None = None
    for task, weight in weights.items():
        total = weight * losses[task] if total is None else total + weight * losses[task]
    assert total is not None
    return total


class MultiTaskLoss(nn.Module):
    """Fixed weighted sum sum_t lambda_t L_t over the tasks listed in `weights` (SPEC 2); each task's loss is
    its `Task.loss` (demt_exp/tasks), called with `options[task]` as keywords.

    `weights` may be an omegaconf DictConfig (Hydra instantiate). `edge_pos_weight` (the official key) is
    the edge loss's `pos_weight` option and is needed when "edge" is weighted.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        edge_pos_weight: float | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        parsed = {str(name): float(value) for name, value in dict(weights).items()}
        if not parsed:
            raise ValueError("MultiTaskLoss needs at least one task weight")
        for name in parsed:
            if name not in known_tasks():
                raise ValueError(f"unknown task {name!r} in loss weights; known tasks: {list(known_tasks())}")
        self.options: dict[str, dict[str, Any]] = {str(t): dict(o) for t, o in dict(options or {}).items()}
        unweighted = sorted(set(self.options) - set(parsed))
        if unweighted:
            raise ValueError(f"loss options for {unweighted}, which have no loss weight; weighted: {list(parsed)}")
        if "edge" in parsed:
            if edge_pos_weight is None:
                raise ValueError("edge is weighted in the loss but edge_pos_weight was not given")
            edge_pos_weight = float(edge_pos_weight)
            if not 0.0 < edge_pos_weight < 1.0:
                raise ValueError(f"edge_pos_weight must lie in (0, 1), got {edge_pos_weight}")
            self.options["edge"] = {**self.options.get("edge", {}), "pos_weight": edge_pos_weight}
        self.weights: dict[str, float] = parsed
        self.edge_pos_weight = None if edge_pos_weight is None else float(edge_pos_weight)
        self.tasks = {name: get_task(name) for name in parsed}

    def task_loss(self, task: str, pred: Tensor, target: Tensor) -> Tensor:
        """Unweighted loss of one task."""
        return self.tasks[task].loss(pred, target, **self.options.get(task, {}))

    def task_losses(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{task: unweighted loss}, still attached to the graph (for loss-weighting strategies)."""
        losses: dict[str, Tensor] = {}
        for task in self.weights:
            if task not in preds:
                raise KeyError(f"no prediction for task {task!r}; got {sorted(preds)}")
            if task not in batch:
                raise KeyError(f"no target for task {task!r} in the batch; got {sorted(batch)}")
            losses[task] = self.task_loss(task, preds[task], batch[task])
        return losses

    def forward(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (total weighted loss, {task: unweighted loss detached for logging})."""
        losses = self.task_losses(preds, batch)
        return weighted_sum(self.weights, losses), {t: v.detach() for t, v in losses.items()}

    def extra_repr(self) -> str:
        return f"weights={self.weights}, options={self.options}"


def build_loss(tasks_cfg: DictConfig) -> nn.Module:
    """The `tasks.loss` config restricted to the selected `tasks.names` (so task subsets need no new file)."""
    weights = tasks_cfg.loss.weights
    missing = [t for t in tasks_cfg.names if t not in weights]
    if missing:
        raise KeyError(f"tasks.loss.weights has no weight for {missing}; it lists {list(weights)}")
    loss_cfg = OmegaConf.to_container(tasks_cfg.loss, resolve=True)
    # Replace, not merge: instantiate() would merge a weights kwarg into the configured dict.
    loss_cfg["weights"] = {t: float(weights[t]) for t in tasks_cfg.names}
    if loss_cfg.get("options"):
        loss_cfg["options"] = {t: o for t, o in loss_cfg["options"].items() if t in tasks_cfg.names}
    return instantiate(loss_cfg)
