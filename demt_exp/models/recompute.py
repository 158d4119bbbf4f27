"""Activation checkpointing that leaves BatchNorm's running statistics as one forward pass does.

`torch.utils.checkpoint` runs a block's forward twice in training (once for the output, once
in backward to rebuild what it did not save). A BatchNorm inside the block would update its
running mean and variance twice, so the model would drift from the one trained without
checkpointing. During the recomputation every BatchNorm of the block gets momentum 0 (its
running statistics are then left exactly as they were: r <- 1 * r + 0 * batch) and its
`num_batches_tracked` is put back afterwards; the normalisation itself uses the batch
statistics in both passes, so outputs and gradients are those of the plain forward.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["frozen_batch_statistics", "recompute_around_norm", "recompute_in_backward", "wants_recompute"]


def tracked_batch_norms(module: nn.Module) -> list[nn.Module]:
    """The BatchNorms of `module` whose training forward updates running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]


class frozen_batch_statistics:  # noqa: N801 - used as a context manager, like contextlib's
    """Within the block, training-mode BatchNorms normalise as usual but update nothing.

    A class, not a generator: checkpoint enters the same recompute context once per backward through the
    block, and a loss-weighting method (GradNorm, PCGrad) goes backward through it once per task.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[nn.Module, float | None, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        norms = tracked_batch_norms(self.module)
        self.saved = [
            (m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms
        ]
        for norm in norms:
            norm.momentum = 0.0

    def __exit__(self, *_: object) -> None:
        for norm, momentum, tracked in self.saved:
            norm.momentum = momentum
            if tracked is not None:
                norm.num_batches_tracked.copy_(tracked)
        self.saved = []


def recompute_in_backward(module: nn.Module, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` (the forward of `module` or a part of it) with its activations recomputed
    in backward instead of saved; RNG state (dropout, stochastic depth) is replayed as well.
    A block without BatchNorm gets the plain checkpoint, which torch.compile can trace."""
    if not tracked_batch_norms(module):
        return checkpoint(function, *args, use_reentrant=False)
    return checkpoint(
        function, *args, use_reentrant=False, context_fn=lambda: (nullcontext(), frozen_batch_statistics(module))
    )


def wants_recompute(enabled: bool) -> bool:
    """Checkpointing only pays where a backward will follow."""
    return enabled and torch.is_grad_enabled()


def recompute_around_norm(norm: nn.Module, function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    """`function(x)`, cheap work around the BatchNorm `norm` (an activation, the norm with its batch statistics,
    then possibly a convolution), saving only x for backward and recomputing the rest there, running statistics
    updated once. A convolution at the end is not rerun: checkpoint's early stop (on by default) ends the
    recomputation once the saved tensors are rebuilt, and the convolution's input is one of them. The plain
    `function(x)` without gradients, under torch.compile (which traces the plain ops without a graph break) and
    for a SyncBatchNorm (multi-GPU training), whose recomputation would add its statistics' collectives to the
    backward."""
    synced = isinstance(norm, nn.SyncBatchNorm)
    if wants_recompute(True) and not synced and not torch.compiler.is_compiling():
        return recompute_in_backward(norm, function, x)
    return function(x)
