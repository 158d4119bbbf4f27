"""PCGrad gradient surgery (Yu, Kumar, Gupta, Levine, Hausman and Finn, NeurIPS 2020), on the shared parameters.

For every task i, in a random order over the other tasks j:
    if g_i . g_j < 0:  g_i <- g_i - (g_i . g_j) / ||g_j||^2 g_j        (g_j the unprojected gradient)
and the update is sum_i g_i. Shared parameters are those more than one task's loss reaches;
a task-specific parameter gets its own task's gradient unchanged (the sum).

Correct under DDP means: the projection of the WHOLE batch's per-task gradients (projecting
each rank's half-batch gradients and averaging is a different, batch-split-dependent update).
So the per-task gradients are averaged over the ranks first, in one all-reduce, then projected
on every rank identically (the orders come from a generator seeded by (seed, step), equal on
every rank and reproducible on resume). Cost: one backward per task (T in all), and an
all-reduce of T gradients instead of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from demt_exp.weighting.base import (
    LossWeighting,
    mean_over_ranks_,
    task_gradients,
    trainable,
    unscaled,
)


def project_conflicts(grads: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """(T, P) per-task gradients -> (T, P) projected ones, task i visiting the others in orders[i]."""
    projected = grads.clone()
    for i, order in enumerate(orders):
        for j in order:
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / grads[j].square().sum() * grads[j]
    return projected


class PCGradWeighting(LossWeighting):
    manual_sync = True

    def __init__(self, tasks: Sequence[str], task_weights: Mapping[str, float], use_task_weights: bool = True,
                 seed: int = 0) -> None:
        super().__init__(tasks, task_weights, use_task_weights)
        self.seed = int(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def orders(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        count = len(self.tasks)
        return [[j for j in torch.randperm(count, generator=generator).tolist() if j != i] for i in range(count)]

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        return torch.stack(self.terms(losses)).sum()

    def backward(self, losses: Mapping[str, Tensor], model: nn.Module,
                 scale: Callable[[Tensor], Tensor] = unscaled) -> Tensor:
        """The projection is homogeneous in the gradients, so a loss scale S passes through it and
        the optimiser's GradScaler divides it out."""
        params = [p for _, p in trainable(model)]
        per_task = task_gradients([scale(term) for term in self.terms(losses)], params)
        reach = [sum(grads[k] is not None for grads in per_task) for k in range(len(params))]
        shared = [k for k, n in enumerate(reach) if n > 1]
        layout = shared + [k for k, n in enumerate(reach) if n == 1]  # shared first: one slice to project
        flat = torch.stack([torch.cat([(grads[k] if grads[k] is not None else torch.zeros_like(params[k])).reshape(-1)
                                       for k in layout]) for grads in per_task])
        del per_task
        mean_over_ranks_([flat])  # the one collective: every task's whole-batch gradient
        width = sum(params[k].numel() for k in shared)
        combined = torch.cat([project_conflicts(flat[:, :width], self.orders()).sum(dim=0), flat[:, width:].sum(dim=0)])
        offset = 0
        for k in layout:
            params[k].grad = combined[offset:offset + params[k].numel()].view_as(params[k])
            offset += params[k].numel()
        self.steps += 1
        return self.combine({t: v.detach() for t, v in losses.items()})

    def weights(self) -> dict[str, float]:
        return dict(self.scale)
