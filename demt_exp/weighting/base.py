"""What every loss-weighting strategy shares: the per-task terms, the DDP contract, one reduction.

A strategy turns the per-task losses of one step into gradients in `.grad`. Additive ones
(fixed, uncertainty, DWA) build a weighted total and run one ordinary backward, so DDP
synchronises the gradient as usual. Gradient-manipulating ones (GradNorm, PCGrad) set
`manual_sync`: the loop then runs forward and backward under `DistributedDataParallel.no_sync()`
and the strategy all-reduces everything it needs in one flat collective (`mean_over_ranks_`),
so the combined gradient is averaged exactly once and every rank derives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from demt_exp.utils.collectives import mean_over_ranks_


def unscaled(loss: Tensor) -> Tensor:
    """The default loss scale: none (fp16 training passes GradScaler.scale)."""
    return loss


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]


class LossWeighting(nn.Module):
    """Base strategy: per-task terms s_t * L_t, one backward of `combine`, own gradients averaged.

    `task_weights` are the official static weights lambda_t (tasks.loss.weights); a method uses
    them as the scale s_t of its terms when `use_task_weights` is true, else s_t = 1.
    """

    manual_sync = False  # True: forward/backward run under no_sync() and backward() reduces itself

    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float],
        use_task_weights: bool = True,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        missing = [t for t in tasks if t not in task_weights]
        if missing:
            raise KeyError(f"weighting: no tasks.loss.weights entry for {missing}")
        self.tasks = tuple(tasks)
        self.scale = {t: float(task_weights[t]) if use_task_weights else 1.0 for t in self.tasks}
        self.lr = None if lr is None else float(lr)

    def terms(self, losses: Mapping[str, Tensor]) -> list[Tensor]:
        """s_t * L_t in task order (the quantities each paper's formula is applied to)."""
        return [self.scale[t] * losses[t] for t in self.tasks]

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The weighted total whose gradient this step applies."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """The weight multiplying each task's loss L_t at the current step (logged)."""
        raise NotImplementedError

    def backward(
        self, losses: Mapping[str, Tensor], model: nn.Module, scale: Callable[[Tensor], Tensor] = unscaled
    ) -> Tensor:
        """Gradients of this step into `.grad` (averaged over ranks), of `scale`d losses (fp16 loss
        scaling; the optimiser's GradScaler divides them again); returns the detached unscaled total."""
        total = self.combine(losses)
        scale(total).backward()
        mean_over_ranks_([p.grad for p in self.parameters() if p.grad is not None])
        return total.detach()

    def after_step(self) -> None:
        """Called after the optimiser step (e.g. to renormalise learned weights)."""

    def param_group(self, base_lr: float) -> dict | None:
        """This strategy's learned parameters as their own optimiser group, without weight decay."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return {
            "params": params,
            "lr": self.lr if self.lr is not None else base_lr,
            "weight_decay": 0.0,
            "name": "weighting",
        }


def task_gradients(
    terms: Sequence[Tensor], params: Sequence[Tensor], keep_graph: bool = False
) -> list[list[Tensor | None]]:
    """d term_t / d params for every task (None where a task does not reach a parameter).

    torch.autograd.grad never triggers DDP's reducer hooks, so nothing is synchronised here;
    `keep_graph` keeps the graph for a later backward."""
    grads = []
    for index, term in enumerate(terms):
        keep = keep_graph or index < len(terms) - 1
        grads.append(list(torch.autograd.grad(term, params, retain_graph=keep, allow_unused=True)))
    return grads
