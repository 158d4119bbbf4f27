"""One training step: forward, per-task losses, one agreement across ranks, weighted backward, optimiser and
schedule step. A step whose loss is not finite on some rank is applied on none (all learn it from the same
collective), so the last good checkpoint always stays good."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from demt_exp.engine.precision import no_scaling, optimizer_step
from demt_exp.engine.signals import SignalWatch
from demt_exp.losses.task_losses import weighted_sum
from demt_exp.utils.collectives import all_reduce_
from demt_exp.weighting import FixedWeighting, LossWeighting


class NonFiniteLoss(FloatingPointError):
    """A task's loss went NaN or infinite; raised before the step can reach the weights."""


@dataclass
class StepResult:
    loss: torch.Tensor
    per_task: dict[str, torch.Tensor]
    nonfinite: list[str]  # tasks whose loss was not finite on some rank; the step was not applied
    signal: int  # a stop signal any rank received before this step's agreement, else 0
    overflow: bool = False  # fp16: the scaled gradients overflowed, the scaler skipped the step (not a non-finite loss)


def agree(
    per_task: Mapping[str, torch.Tensor], watch: SignalWatch | None, device: torch.device
) -> tuple[list[str], int]:
    """One collective per step: which task losses are finite on every rank, and any stop signal."""
    flags = torch.stack([torch.isfinite(v.detach()).all().double() for v in per_task.values()])
    flags = torch.cat(
        [flags, torch.tensor([-float(watch.received if watch else 0)], dtype=torch.float64, device=flags.device)]
    ).to(device)
    all_reduce_(flags, "min")
    nonfinite = [t for t, ok in zip(per_task, flags[:-1].tolist()) if ok < 1]
    return nonfinite, int(-flags[-1].item())


def train_step(
    model: nn.Module,
    batch: dict[str, Any],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    autocast: Callable[[], Any],
    grad_clip: float | None,
    watch: SignalWatch | None = None,
    weighting: LossWeighting | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Forward, per-task losses, agreement, weighted backward, optimiser and schedule step.

    `weighting` (default: the fixed official weights) leaves the step's gradients in `.grad`;
    one that combines per-task gradients itself runs under DDP's no_sync() and reduces them once.
    A step whose loss is not finite on some rank is not applied on any rank (all ranks know it
    from the same collective); the schedule still advances with the step count. `scaler` (fp16)
    scales the loss before backward and skips a step whose scaled gradients overflowed."""
    if weighting is None:
        weighting = FixedWeighting(list(loss_fn.weights), loss_fn.weights)
    scaler = no_scaling() if scaler is None else scaler
    overflow = False
    manual = weighting.manual_sync and isinstance(model, DistributedDataParallel)
    with model.no_sync() if manual else nullcontext():
        with autocast():
            preds = model(batch["image"])
        preds = {t: p.float() for t, p in preds.items()}
        losses = loss_fn.task_losses(preds, batch)
        per_task = {t: v.detach() for t, v in losses.items()}
        nonfinite, signum = agree(per_task, watch, batch["image"].device)
        optimizer.zero_grad(set_to_none=True)
        weighting.zero_grad(set_to_none=True)
        if nonfinite:
            total = weighted_sum(loss_fn.weights, per_task)
            if isinstance(model, DistributedDataParallel) and not manual:
                # DDP expects each forward's gradient reduction to finish; these gradients are dropped
                (weighted_sum(loss_fn.weights, losses) * 0).backward()
                optimizer.zero_grad(set_to_none=True)
        else:
            total = weighting.backward(losses, model, scale=scaler.scale)
            overflow = not optimizer_step(scaler, optimizer, model.parameters(), grad_clip)
            weighting.after_step()
    scheduler.step()
    return StepResult(total.detach(), per_task, nonfinite, signum, overflow)
