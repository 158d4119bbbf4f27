"""The paper's numbers beside the runs: a published row and each run's difference to it.

A run of a paper preset (`+experiment=demt_nyud_swin_t`, ...) carries the preset's `paper` block in its
`.hydra/config.yaml`: `row` (where the numbers come from), `metrics` ({task/metric: value}) and, where the
paper gives them, `single_task` ({task/metric: value}, the single-task numbers its Delta_m is taken
against). The block is read as plain data like the rest of a run folder; an entry that is not a number is
left out. compare then shows, for each published row its runs cite, one more table row, and per metric
the run's difference to the paper (`semseg/mIoU vs paper`: run minus paper, in the metric's unit, so a
negative rmse difference and a positive mIoU difference are both better). With `single_task` given,
`multi_task/delta_m_paper_refs` is Delta_m of the runs and of the paper row against those numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demt_exp.config.objective import DELTA_M
from demt_exp.utils.metric_key import split_metric

SOURCE = "source"  # the column that tells a published row from the runs
RUNS = "run"
VS_PAPER = " vs paper"
PAPER_DELTA_M = "multi_task/delta_m_paper_refs"


@dataclass(frozen=True)
class Published:
    row: str
    metrics: dict[str, float]
    single_task: dict[str, float]

    @property
    def label(self) -> str:
        return f"paper: {self.row}"


def _numbers(block: Any) -> dict[str, float]:
    """`task/metric` -> number entries of a mapping; anything else (text, null, nested) is left out."""
    if not isinstance(block, Mapping):
        return {}
    return {
        str(key): float(value)
        for key, value in block.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and split_metric(str(key)) is not None
        and math.isfinite(value)
    }


def read_published(config: Any) -> Published | None:
    """The `paper` block of a composed config (plain YAML data), or None when there is none with numbers."""
    paper = config.get("paper") if isinstance(config, Mapping) else None
    if not isinstance(paper, Mapping):
        return None
    metrics = _numbers(paper.get("metrics"))
    if not metrics:
        return None
    row = paper.get("row")
    return Published(str(row) if row else "published", metrics, _numbers(paper.get("single_task")))


def vs_paper(metric: str) -> str:
    return metric + VS_PAPER


def compared_metric(metric: str) -> str:
    """The metric a difference column is of (`semseg/mIoU vs paper` -> `semseg/mIoU`); others unchanged."""
    return metric.removesuffix(VS_PAPER)


def delta_m_against(values: Mapping[str, float], single_task: Mapping[str, float]) -> float | None:
    """Delta_m of `values` against the paper's single-task numbers, over the metrics both have."""
    from demt_exp.metrics.delta_m import delta_m  # lazy: the metrics package imports torch
    from demt_exp.metrics.registry import lower_is_better

    directions: dict[str, dict[str, bool]] = {}
    for metric in (m for m in single_task if m in values):
        try:
            up = not lower_is_better(metric)
        except ValueError:  # not a metric of this suite: no known direction, so no term
            continue
        task, name = metric.split("/", 1)
        directions.setdefault(task, {})[name] = up
    common = [f"{task}/{name}" for task, names in directions.items() for name in names]
    if not common:
        return None
    try:
        return delta_m(_nest(values, common), _nest(single_task, common), common, directions).value
    except ValueError:  # a single-task number of 0: no relative change
        return None


def _nest(flat: Mapping[str, float], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    nested: dict[str, dict[str, float]] = {}
    for key in keys:
        task, name = key.split("/", 1)
        nested.setdefault(task, {})[name] = flat[key]
    return nested


def with_paper_delta_m(values: dict[str, float], paper: Published) -> dict[str, float]:
    """`values` and, where the paper gives single-task numbers, their Delta_m against them."""
    reference = delta_m_against(values, paper.single_task)
    return values if reference is None else {**values, PAPER_DELTA_M: reference}


def with_differences(metrics: dict[str, float], paper: Published) -> dict[str, float]:
    """A run's metrics plus its difference to each published number, and Delta_m against the paper's
    single-task numbers where the paper gives them."""
    differences = {vs_paper(m): metrics[m] - value for m, value in paper.metrics.items() if m in metrics}
    return with_paper_delta_m({**metrics, **differences}, paper)


def published_values(paper: Published) -> dict[str, float]:
    """The published row's values: the paper's numbers and, with single-task numbers, its own Delta_m."""
    return with_paper_delta_m(dict(paper.metrics), paper)


def beside(metrics: Sequence[str], have: Sequence[str]) -> list[str]:
    """Each chosen metric followed by its difference column, and the paper-referenced Delta_m after Delta_m
    (or at the end), where the runs have them."""
    out: list[str] = []
    for metric in metrics:
        out.append(metric)
        if vs_paper(metric) in have and vs_paper(metric) not in metrics:
            out.append(vs_paper(metric))
    if PAPER_DELTA_M in have and PAPER_DELTA_M not in out:
        at = out.index(DELTA_M) + 1 if DELTA_M in out else len(out)
        out.insert(at, PAPER_DELTA_M)
    return out
