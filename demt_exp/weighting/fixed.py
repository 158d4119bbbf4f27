"""The official recipe: the fixed weighted sum sum_t lambda_t L_t of tasks.loss.weights (SPEC 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from demt_exp.losses.task_losses import weighted_sum
from demt_exp.weighting.base import LossWeighting


class FixedWeighting(LossWeighting):
    """Bit-identical to MultiTaskLoss's total: the same products, summed in the same order."""

    def __init__(self, tasks: Sequence[str], task_weights: Mapping[str, float]) -> None:
        super().__init__(tasks, task_weights, use_task_weights=True)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        return weighted_sum(self.scale, losses)

    def weights(self) -> dict[str, float]:
        return dict(self.scale)
