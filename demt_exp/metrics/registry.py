"""Which metrics each task reports, and the multi-task container the evaluation loop updates.

`TASK_METRICS` is the one list: a task's numbers are the union of its metrics' `compute()`
dicts, so adding a metric to a task (e.g. the boundary odsF/oisF/AP next to the edge pixel
proxy) is one more factory in its tuple. Factories get a `MetricContext`, which carries what
some metrics need beyond the task (class count, dataset name, protocol options).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from demt_exp.data.tasks import TASK_NAMES, TASKS
from demt_exp.metrics.dense import DepthRMSE, EdgePixelMaxF, MaxF, MeanIoU, Metric, NormalsMeanAngle
from demt_exp.metrics.depth import DepthRelativeErrors
from demt_exp.metrics.normals import NormalsAngleDistribution
from demt_exp.metrics.saliency import SaliencyMeanIoU


@dataclass(frozen=True)
class MetricContext:
    """What a metric factory may need besides the task itself."""

    num_semseg_classes: int
    dataset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # per-metric settings, e.g. {"boundary": {...}}


MetricFactory = Callable[[MetricContext], Metric]


def _parts_miou(_: MetricContext) -> Metric:
    classes = TASKS["human_parts"].fixed_output_channels
    assert classes is not None
    return MeanIoU(classes)


TASK_METRICS: dict[str, tuple[MetricFactory, ...]] = {
    "semseg": (lambda c: MeanIoU(c.num_semseg_classes),),
    "human_parts": (_parts_miou,),
    "sal": (lambda c: MaxF(), lambda c: SaliencyMeanIoU()),
    "normals": (lambda c: NormalsMeanAngle(), lambda c: NormalsAngleDistribution()),
    "depth": (lambda c: DepthRMSE(), lambda c: DepthRelativeErrors()),
    "edge": (lambda c: EdgePixelMaxF(),),
}


def build_task_metrics(task: str, context: MetricContext) -> list[Metric]:
    if task not in TASK_METRICS:
        raise ValueError(f"unknown task {task!r}; known tasks: {list(TASK_NAMES)}")
    return [factory(context) for factory in TASK_METRICS[task]]


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

    def to(self, device: torch.device | str) -> "MultiTaskMetrics":
        for metric in self._all():
            metric.to(device)
        return self

    def higher_is_better(self) -> dict[str, dict[str, bool]]:
        """Direction of every reported number, e.g. for checkpoint selection or Delta_m."""
        return {
            task: {name: up for metric in group for name, up in type(metric).higher_is_better.items()}
            for task, group in self.metrics.items()
        }
