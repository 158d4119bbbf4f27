"""Which metrics each task reports, and the multi-task container the evaluation loop updates.

Each task lists its metric classes (`Task.metrics`, demt_exp/tasks): a task's numbers are the union of
its metrics' `compute()` dicts, so adding a metric to a task (e.g. the boundary odsF/oisF/AP next to the
edge pixel proxy) is one more class in its tuple. Each class builds itself with `from_context(MetricContext)`,
which carries what some metrics need beyond the task (class count, dataset name, options).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from demt_exp.metrics.dense import Metric
from demt_exp.tasks.registry import get_task, known_tasks


@dataclass(frozen=True)
class MetricContext:
    """What a metric factory may need besides the task itself."""

    num_semseg_classes: int
    dataset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # per-metric settings, e.g. {"boundary": {...}}


def _metric_classes(task: str) -> tuple[type[Metric], ...]:
    try:
        return get_task(task).metrics
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def build_task_metrics(task: str, context: MetricContext) -> list[Metric]:
    """The task's metrics; a class whose `from_context` returns None does not run in this context."""
    built = (cls.from_context(context) for cls in _metric_classes(task))
    return [metric for metric in built if metric is not None]


def metric_directions(tasks: Iterable[str] | None = None) -> dict[str, dict[str, bool]]:
    """{task: {name: higher_is_better}} for every number the tasks (default: all known) can report (no metric
    is built)."""
    tasks = known_tasks() if tasks is None else tasks
    return {task: {n: up for cls in _metric_classes(task) for n, up in cls.higher_is_better.items()} for task in tasks}


def lower_is_better(metric: str) -> bool:
    """The direction of `task/name` (e.g. `trainer.checkpoint.best`), from the metric classes themselves:
    `depth/rmse` and any task's `loss` go down; `semseg/mIoU`, `edge/odsF` and `multi_task/delta_m` go up."""
    task, _, name = metric.partition("/")
    if name == "loss":
        return True
    if task == "multi_task" and name == "delta_m":
        return False
    directions = metric_directions([task]) if task in known_tasks() else {}
    if name not in directions.get(task, {}):
        raise ValueError(f"{metric!r} is no metric this suite reports, so its direction is unknown (set max or min)")
    return not directions[task][name]


class MultiTaskMetrics:
    """Every metric of every task, updated from a prediction dict and a batch dict.

    `sync()` pools all states over the processes (call it once before `compute()`);
    `states()` lists the summable state tensors themselves, in task order.
    """

    def __init__(self, tasks: Iterable[str], num_semseg_classes: int, context: MetricContext | None = None) -> None:
        self.tasks: list[str] = [str(t) for t in tasks]
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"duplicate tasks in {self.tasks}")
        context = context or MetricContext(int(num_semseg_classes))
        self.metrics: dict[str, list[Metric]] = {t: build_task_metrics(t, context) for t in self.tasks}

    def _all(self) -> list[Metric]:
        return [metric for group in self.metrics.values() for metric in group]

    def update(self, preds: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        for task, group in self.metrics.items():
            if task not in preds:
                raise KeyError(f"no prediction for task {task!r}; got {sorted(preds)}")
            if task not in batch:
                raise KeyError(f"no target for task {task!r} in the batch; got {sorted(batch)}")
            for metric in group:
                metric.update_from_batch(preds[task], batch, task)

    def compute(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        for task, group in self.metrics.items():
            merged: dict[str, float] = {}
            for metric in group:
                values = metric.compute()
                clash = set(values) & set(merged)
                if clash:
                    raise ValueError(f"task {task!r}: metric {type(metric).__name__} repeats the names {sorted(clash)}")
                merged.update(values)
            results[task] = merged
        return results

    def sync(self) -> None:
        for metric in self._all():
            metric.sync()

    def reset(self) -> None:
        for metric in self._all():
            metric.reset()

    def states(self) -> list[Tensor]:
        return [metric.state for metric in self._all()]

    def to(self, device: torch.device | str) -> MultiTaskMetrics:
        for metric in self._all():
            metric.to(device)
        return self

    def higher_is_better(self) -> dict[str, dict[str, bool]]:
        """Direction of every number these metrics report, e.g. for checkpoint selection or Delta_m."""
        return {
            task: {n: up for m in group for n, up in type(m).higher_is_better.items()}
            for task, group in self.metrics.items()
        }
