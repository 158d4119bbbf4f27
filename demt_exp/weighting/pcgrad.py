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
all-reduce of T gradients instead of one; the surgery itself needs only the T x T Gram matrix
of the shared gradients (`surgery_coefficients`) and one weighted sum of the T gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from demt_exp.utils.collectives import mean_over_ranks_
from demt_exp.weighting.base import (
    LossWeighting,
    trainable,
    unscaled,
)


def surgery_coefficients(gram: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """(T, T) C with projected g_i = sum_k C[i, k] g_k, from the Gram matrix G[i, j] = g_i . g_j alone.

    Every projection keeps g_i' in the span of the original gradients, so its dot with g_j is
    C[i] . G[:, j]: the sequential surgery runs on T x T numbers instead of T passes over P."""
    gram = gram.detach().double().cpu()  # T x T: a few numbers, so the branches below run on the host
    coefficients = torch.eye(gram.shape[0], dtype=torch.float64)
    for i, order in enumerate(orders):
        for j in order:
            dot = coefficients[i] @ gram[:, j]
            if dot < 0:
                coefficients[i, j] -= dot / gram[j, j]
    return coefficients


def project_conflicts(grads: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """(T, P) per-task gradients -> (T, P) projected ones, task i visiting the others in orders[i]."""
    coefficients = surgery_coefficients(grads @ grads.T, orders)
    return coefficients.to(grads.device, grads.dtype) @ grads


def parameter_segments(params: Sequence[Tensor]) -> list[slice]:
    """Where each parameter's gradient lies in a row of the flat (T, P) gradient matrix."""
    segments, offset = [], 0
    for param in params:
        segments.append(slice(offset, offset + param.numel()))
        offset += param.numel()
    return segments


def flat_task_gradients(
    terms: Sequence[Tensor], params: Sequence[Tensor], segments: Sequence[slice]
) -> tuple[Tensor, list[list[bool]]]:
    """(T, P) matrix of every task's gradient (parameters at `segments`, zeros where a task does not
    reach one) and which task reaches which parameter. Each backward is written straight into
    its row and dropped, so only one task's loose gradients exist at a time."""
    reference = params[0]
    flat = torch.empty(len(terms), segments[-1].stop, dtype=reference.dtype, device=reference.device)
    reached: list[list[bool]] = []
    for row, term in enumerate(terms):
        grads = torch.autograd.grad(term, params, retain_graph=row < len(terms) - 1, allow_unused=True)
        for segment, grad in zip(segments, grads):
            if grad is None:
                flat[row, segment].zero_()
            else:
                flat[row, segment].copy_(grad.reshape(-1))
        reached.append([grad is not None for grad in grads])
        del grads
    return flat, reached


class PCGradWeighting(LossWeighting):
    manual_sync = True

    def __init__(
        self, tasks: Sequence[str], task_weights: Mapping[str, float], use_task_weights: bool = True, seed: int = 0
    ) -> None:
        super().__init__(tasks, task_weights, use_task_weights)
        self.seed = int(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def orders(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        count = len(self.tasks)
        return [[j for j in torch.randperm(count, generator=generator).tolist() if j != i] for i in range(count)]

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        return torch.stack(self.terms(losses)).sum()

    def backward(
        self, losses: Mapping[str, Tensor], model: nn.Module, scale: Callable[[Tensor], Tensor] = unscaled
    ) -> Tensor:
        """The projection is homogeneous in the gradients, so a loss scale S passes through it and
        the optimiser's GradScaler divides it out."""
        params = [p for _, p in trainable(model)]
        segments = parameter_segments(params)
        flat, reached = flat_task_gradients([scale(term) for term in self.terms(losses)], params, segments)
        mean_over_ranks_([flat])  # the one collective: every task's whole-batch gradient
        shared = [sum(row[k] for row in reached) > 1 for k in range(len(params))]
        gram = flat.new_zeros(len(reached), len(reached))
        for segment, is_shared in zip(segments, shared):
            if is_shared:
                gram += flat[:, segment] @ flat[:, segment].T
        weights = surgery_coefficients(gram, self.orders()).sum(dim=0).to(flat.device, flat.dtype)  # sum_i g_i' = w @ g
        for param, segment, is_shared in zip(params, segments, shared):
            grad = weights @ flat[:, segment] if is_shared else flat[:, segment].sum(dim=0)
            param.grad = grad.view_as(param)
        self.steps += 1
        return self.combine({t: v.detach() for t, v in losses.items()})

    def weights(self) -> dict[str, float]:
        return dict(self.scale)
