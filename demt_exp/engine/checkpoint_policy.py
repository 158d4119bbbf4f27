"""What a checkpoint holds and when one is worth writing: the best metric so far, whether the optimiser state
is saved, and the checks every save makes (equal weights on every rank, finite weights)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from demt_exp.metrics.registry import lower_is_better


def saves_optimizer(setting: Any, dataset: str) -> bool:
    """`trainer.checkpoint.save_optimizer`: true (exact resume), false (weights only, a third of the size), or
    auto (false only for the synthetic demo, whose tries should not each write the optimiser state)."""
    if setting == "auto":
        return dataset != "synthetic"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"trainer.checkpoint.save_optimizer={setting!r}; expected auto, true or false")


class BestMetric:
    """The best value of `trainer.checkpoint.best` seen so far, in its direction."""

    def __init__(self, metric: str | None, mode: str, value: float | None = None) -> None:
        self.metric = metric
        self.lower = (lower_is_better(metric) if mode == "auto" else mode == "min") if metric else False
        self.value = value

    def improved(self, results: Mapping[str, Mapping[str, float]]) -> bool:
        if not self.metric or not results:
            return False
        task, name = self.metric.split("/", 1)
        if name not in results.get(task, {}):
            raise KeyError(
                f"trainer.checkpoint.best={self.metric!r}: evaluation gives {sorted(results[task])} for {task}"
            )
        value = float(results[task][name])
        better = self.value is None or (value < self.value if self.lower else value > self.value)
        if better:
            self.value = value
        return better


def params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def weights_checksum(model: nn.Module) -> tuple[float, float]:
    """Sum and sum of squares of all parameters (float64): equal on ranks holding equal weights."""
    total = torch.zeros(2, dtype=torch.float64)
    for p in model.parameters():
        values = p.detach().double().cpu()
        total += torch.stack([values.sum(), values.square().sum()])
    return float(total[0]), float(total[1])
