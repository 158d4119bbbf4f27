"""Dynamic Weight Average (Liu, Johns and Davison, "End-to-end multi-task learning with attention", CVPR 2019).

    w_k = Lbar_k(j-1) / Lbar_k(j-2),   lambda_k = K exp(w_k / T) / sum_i exp(w_i / T),   T = 2

The paper averages over epochs; this loop is iteration based, so Lbar_k(j) is the average loss
of task k over window j of `window` consecutive steps. During the first two windows
lambda_k = 1. Every step's losses are averaged over the ranks before they are accumulated (one
all-reduce of K numbers), so every rank holds the same windows, the same weights, and a
checkpoint taken mid-window resumes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from demt_exp.utils.collectives import mean_over_ranks_
from demt_exp.weighting.base import LossWeighting


class DWAWeighting(LossWeighting):
    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float],
        use_task_weights: bool = True,
        temperature: float = 2.0,
        window: int = 100,
    ) -> None:
        super().__init__(tasks, task_weights, use_task_weights)
        if window < 1 or temperature <= 0:
            raise ValueError(f"weighting: window={window} must be >= 1 and temperature={temperature} > 0")
        self.temperature = float(temperature)
        self.window = int(window)
        k = len(self.tasks)
        self.register_buffer("current_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("current_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("previous", torch.zeros(2, k, dtype=torch.float64))  # windows j-2, j-1
        self.register_buffer("complete", torch.zeros((), dtype=torch.long))  # windows finished so far
        self.register_buffer("lambdas", torch.ones(k, dtype=torch.float64))

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        terms = self.terms(losses)
        total: Tensor | None = None
        for weight, term in zip(self.lambdas.tolist(), terms):
            total = weight * term if total is None else total + weight * term
        self.observe(torch.stack([t.detach().double() for t in terms]))
        assert total is not None
        return total

    def observe(self, step_losses: Tensor) -> None:
        """Accumulate this step's (all-ranks) losses; at a window's end move the windows and the weights."""
        step_losses = step_losses.to(self.current_sum.device).clone()
        mean_over_ranks_([step_losses])
        self.current_sum += step_losses
        self.current_steps += 1
        if int(self.current_steps) < self.window:
            return
        self.previous = torch.stack([self.previous[1], self.current_sum / self.window])
        self.current_sum.zero_()
        self.current_steps.zero_()
        self.complete += 1
        if int(self.complete) >= 2:
            ratio = self.previous[1] / self.previous[0]
            self.lambdas = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)

    def weights(self) -> dict[str, float]:
        return {t: w * self.scale[t] for t, w in zip(self.tasks, self.lambdas.tolist())}
