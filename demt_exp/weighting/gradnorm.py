"""GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018).

Learned weights w_i (initialised 1). On the last shared layer W (the parameters whose names
start with `layer`; DeMT/DeGMix: the encoder's projection into the task mixers):

    G_i = || grad_W (w_i L_i) ||_2,   Gbar = mean_i G_i,
    Ltilde_i = L_i(t) / L_i(0),       r_i = Ltilde_i / mean_j Ltilde_j,
    L_grad = sum_i | G_i - Gbar * r_i^alpha |_1   with the target Gbar * r_i^alpha held constant,

w receives grad_w L_grad only (the network receives grad of sum_i w_i L_i with w held
constant), and after each optimiser step w is renormalised to sum to the number of tasks.
Under DDP the per-task gradients on W and the losses are averaged over the ranks in the same
single all-reduce as the network gradient, so G_i and r_i are those of the whole batch.
Cost: one extra partial backward (from the loss to W) per task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from demt_exp.utils.collectives import mean_over_ranks_
from demt_exp.weighting.base import (
    LossWeighting,
    task_gradients,
    trainable,
    unscaled,
)


class GradNormWeighting(LossWeighting):
    manual_sync = True

    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float],
        use_task_weights: bool = False,
        alpha: float = 1.5,
        layer: str = "encoder.projection",
        lr: float | None = None,
    ) -> None:
        super().__init__(tasks, task_weights, use_task_weights, lr)
        self.alpha = float(alpha)
        self.layer = str(layer)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks), dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def shared_layer(self, model: nn.Module) -> list[Tensor]:
        params = [p for n, p in trainable(model) if n == self.layer or n.startswith(self.layer + ".")]
        if not params:
            names = sorted({n.rsplit(".", 1)[0] for n, _ in trainable(model)})
            raise ValueError(
                f"weighting.layer={self.layer!r} names no trainable parameter; modules with "
                f"parameters: {names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        return params

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        w = self.task_weights.detach()
        total: Tensor | None = None
        for index, term in enumerate(self.terms(losses)):
            total = w[index] * term if total is None else total + w[index] * term
        assert total is not None
        return total

    def backward(
        self, losses: Mapping[str, Tensor], model: nn.Module, scale: Callable[[Tensor], Tensor] = unscaled
    ) -> Tensor:
        """Under a loss scale S the norms G_i are S times larger, so is grad_w L_grad (it is linear in
        them), and the optimiser's GradScaler divides it by S with the network's gradients."""
        terms = self.terms(losses)
        layer = self.shared_layer(model)
        per_task = task_gradients([scale(term) for term in terms], layer, keep_graph=True)
        flat = torch.stack(
            [
                torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, layer)])
                for grads in per_task
            ]
        )
        total = self.combine(losses)
        scale(total).backward()
        model_grads = [p.grad for _, p in trainable(model) if p.grad is not None]
        values = torch.stack([t.detach() for t in terms]).to(flat.dtype)
        mean_over_ranks_([*model_grads, flat, values])  # the one collective of this step
        self.set_weight_gradient(flat.norm(dim=1).double(), values.double())
        return total.detach()

    def set_weight_gradient(self, norms: Tensor, values: Tensor) -> None:
        """grad_w L_grad from the all-ranks norms ||grad_W L_i|| and losses L_i."""
        if not bool(self.started):
            self.initial_losses.copy_(values)
            self.started.fill_(True)
        ratio = values / self.initial_losses
        relative = ratio / ratio.mean()
        w = self.task_weights.detach().double().requires_grad_(True)
        g = w * norms
        target = (g.mean() * relative**self.alpha).detach()
        (grad,) = torch.autograd.grad((g - target).abs().sum(), w)
        self.task_weights.grad = grad.to(self.task_weights.dtype)

    @torch.no_grad()
    def after_step(self) -> None:
        self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())

    def weights(self) -> dict[str, float]:
        return {t: w * self.scale[t] for t, w in zip(self.tasks, self.task_weights.detach().tolist())}
