"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

One learned s_t = log sigma_t^2 per task (initialised 0, i.e. sigma_t = 1). The paper's
per-task forms, written with s_t (log sigma = s/2):

    regression     (depth, normals):                 1/(2 sigma^2) L + log sigma = 0.5 exp(-s) L + 0.5 s
    classification (semseg, human_parts, sal, edge): 1/sigma^2 L + log sigma     =     exp(-s) L + 0.5 s

Learning s rather than sigma keeps the weight positive and the optimisation stable, as the
paper recommends. The s_t are one optimiser group without weight decay; DDP averages their
gradients with one small all-reduce (their gradient is linear in L_t, so this equals the
gradient of the all-ranks loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from demt_exp.tasks.registry import get_task
from demt_exp.weighting.base import LossWeighting


def likelihood_factor(task: str) -> float:
    """1/2 for a Gaussian likelihood (regression: `Task.regression`), 1 for a softmax/Boltzmann one."""
    return 0.5 if get_task(task).regression else 1.0


class UncertaintyWeighting(LossWeighting):
    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float],
        use_task_weights: bool = False,
        lr: float | None = None,
    ) -> None:
        super().__init__(tasks, task_weights, use_task_weights, lr)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks), dtype=torch.float64))
        self.register_buffer("factors", torch.tensor([likelihood_factor(t) for t in self.tasks], dtype=torch.float64))

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        total: Tensor | None = None
        for index, term in enumerate(self.terms(losses)):
            s = self.log_vars[index]
            part = (self.factors[index] * torch.exp(-s) * term + 0.5 * s).to(term.dtype)
            total = part if total is None else total + part
        assert total is not None
        return total

    def weights(self) -> dict[str, float]:
        coefficient = (self.factors * torch.exp(-self.log_vars.detach())).tolist()
        return {t: c * self.scale[t] for t, c in zip(self.tasks, coefficient)}
