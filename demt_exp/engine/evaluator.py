"""Evaluation: pooled metrics over the whole validation set, summed across processes (SPEC 4).

The loop that training and `python -m demt_exp.evaluate` (the command, `demt_exp/evaluate.py`) share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from demt_exp.engine.signals import ignore_interrupt
from demt_exp.metrics import MetricContext, MultiTaskMetrics
from demt_exp.utils.collectives import all_reduce_sum_

BatchHook = Callable[[dict[str, Any], dict[str, torch.Tensor]], None]


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`: each image is evaluated exactly once (SPEC 8 item 22)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch (not the meta data) to `device`."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def eval_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, num_workers: int = 0) -> DataLoader:
    """Ordered loader over this process's shard of the validation set."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=num_workers,
        drop_last=False,
        worker_init_fn=ignore_interrupt,  # a first Ctrl-C lets the step and its checkpoint finish
    )


def image_losses(
    loss_fn: Any, preds: dict[str, torch.Tensor], batch: dict[str, Any], tasks: Sequence[str]
) -> torch.Tensor:
    """Each task's loss summed over the batch's images, each image's loss on its own, then the image count.

    A batch's mean loss weights images by their valid pixels (ignored labels differ per image), so it
    would depend on which images share a batch: on the eval batch size and the number of processes."""
    sums = torch.zeros(len(tasks) + 1, dtype=torch.float64, device=batch["image"].device)
    for j in range(batch["image"].shape[0]):
        one = loss_fn.task_losses({t: preds[t][j : j + 1] for t in tasks}, {t: batch[t][j : j + 1] for t in tasks})
        sums[:-1] += torch.stack([one[t].detach().double() for t in tasks])
    sums[-1] = batch["image"].shape[0]
    return sums


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    tasks: Sequence[str],
    num_semseg_classes: int,
    device: torch.device,
    loss_fn: Callable[..., Any] | None = None,
    autocast: Callable[[], Any] = nullcontext,
    on_batch: BatchHook | None = None,
    context: MetricContext | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per task ({task: {name: value}}), plus the mean unweighted loss per task when `loss_fn` is given.

    `on_batch(batch, preds)` sees every batch with its float predictions (e.g. to write files).
    """
    was_training = model.training
    model.eval()
    metrics = MultiTaskMetrics(list(tasks), num_semseg_classes, context)
    loss_sums = torch.zeros(len(tasks) + 1, dtype=torch.float64, device=device)  # per task, then image count
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            preds = model(batch["image"])
        preds = {t: p.float() for t, p in preds.items()}
        metrics.update(preds, batch)
        if on_batch is not None:
            on_batch(batch, preds)
        if loss_fn is not None:
            loss_sums += image_losses(loss_fn, preds, batch, tasks)
    metrics.to(device).sync()  # a process that saw no image still holds CPU states
    results = metrics.compute()
    if loss_fn is not None:
        all_reduce_sum_(loss_sums)
        for i, task in enumerate(tasks):
            results.setdefault(task, {})["loss"] = float(loss_sums[i] / loss_sums[-1].clamp_min(1))
    model.train(was_training)
    return results
