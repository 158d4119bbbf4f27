"""Which metrics the compare command shows, and each metric's unit: the one place for both.

The default is the Delta_m set the literature reports for the runs' dataset
(`demt_exp.metrics.delta_m.STANDARD_METRICS`), then Delta_m itself and the parameter count
where the runs have them; a dataset without such a set falls back to every metric, and says so.
Units give the plot axes their labels and the table its decimals: a percentage and an RMSE in
metres never share an axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from demt_exp.config.objective import DELTA_M
from demt_exp.results.published import PAPER_DELTA_M, beside, compared_metric
from demt_exp.results.runs import PARAMETERS, RunResult
from demt_exp.utils.errors import UserError
from demt_exp.utils.metric_key import split_metric

ALL = "all"


@dataclass(frozen=True)
class Unit:
    label: str  # axis label, and the table header's suffix when not empty
    decimals: int
    scale: float = 1.0  # plotted value = value * scale (parameters in millions)
    axis: str = ""  # axis label when it differs from `label`


PERCENT = Unit("%", 2)
METRES = Unit("m", 4)
DEGREES = Unit("deg", 2, axis="degrees")
UNITLESS = Unit("", 4, axis="unitless")
COUNT = Unit("", 0, scale=1e-6, axis="millions")

# By the metric's name (the part after "task/"); full "task/metric" keys first, then patterns.
UNITS_BY_KEY: dict[str, Unit] = {PARAMETERS: COUNT, DELTA_M: PERCENT, PAPER_DELTA_M: PERCENT}
UNITS_BY_NAME: dict[str, Unit] = {
    "mIoU": PERCENT,
    "maxF": PERCENT,
    "pixel_maxF": PERCENT,
    "odsF": PERCENT,
    "oisF": PERCENT,
    "AP": PERCENT,
    "pixel_acc": PERCENT,
    "delta_m": PERCENT,
    "rmse": METRES,
    "mean_angle": DEGREES,
    "median_angle": DEGREES,
    "rmse_angle": DEGREES,
    "loss": UNITLESS,
    "abs_rel": UNITLESS,
    "log10": UNITLESS,
    "ods_threshold": UNITLESS,
}
UNITS_BY_PATTERN: tuple[tuple[str, Unit], ...] = ((r"delta\d+", PERCENT), (r"within_[\d_]+", PERCENT))


def unit_of(metric: str) -> Unit:
    """The unit of "task/metric" (and of its difference to the paper); unknown names are unitless."""
    metric = compared_metric(metric)
    if metric in UNITS_BY_KEY:
        return UNITS_BY_KEY[metric]
    name = metric.split("/", 1)[-1]
    if name in UNITS_BY_NAME:
        return UNITS_BY_NAME[name]
    return next((unit for pattern, unit in UNITS_BY_PATTERN if re.fullmatch(pattern, name)), UNITLESS)


def axis_label(metric: str) -> str:
    unit = unit_of(metric)
    return unit.axis or unit.label


SHORT_NAMES = {DELTA_M: "Delta_m", PARAMETERS: "params", PAPER_DELTA_M: "Delta_m (paper refs)"}


def header(metric: str) -> str:
    """The table column of a metric: its name, shorter for Delta_m and the parameter count."""
    return SHORT_NAMES.get(metric, metric)


def units_line(metrics: Sequence[str]) -> str | None:
    """`units: % (semseg/mIoU, Delta_m), m (depth/rmse)`: units below the table rather than in every header,
    which would cost a default table its single block."""
    by_unit: dict[str, list[str]] = {}
    for metric in (m for m in metrics if compared_metric(m) == m):  # a difference has its metric's unit
        if unit_of(metric).label:
            by_unit.setdefault(unit_of(metric).label, []).append(header(metric))
    if not by_unit:
        return None
    return "units: " + ", ".join(f"{label} ({', '.join(names)})" for label, names in by_unit.items())


def format_value(metric: str, mean: float, std: float = math.nan) -> str:
    """`46.36 ± 0.12` in the metric's decimals; `-` for no value."""
    if math.isnan(mean):
        return "-"
    decimals = unit_of(metric).decimals
    grouping = "," if metric == PARAMETERS else ""
    signed = metric in (DELTA_M, PAPER_DELTA_M) or compared_metric(metric) != metric  # a change: + or -
    text = f"{mean:{'+' if signed else ''}{grouping}.{decimals}f}"
    return text if math.isnan(std) else f"{text} ± {std:{grouping}.{decimals}f}"


def available(runs: Sequence[RunResult]) -> list[str]:
    """Every metric some run has: tasks alphabetically, then Delta_m, then the parameter count."""
    names = {m for run in runs for m in run.metrics}
    return sorted(names, key=lambda m: (m == PARAMETERS, m in (DELTA_M, PAPER_DELTA_M), m))


def standard_set(dataset: str) -> tuple[str, ...] | None:
    """The dataset's Delta_m metrics, or None for a dataset without a published set."""
    from demt_exp.metrics.delta_m import STANDARD_METRICS  # lazy: the metrics package imports torch

    return STANDARD_METRICS.get(dataset)


def default_metrics(runs: Sequence[RunResult]) -> tuple[list[str], list[str]]:
    """(metrics, notes): the runs' dataset's Delta_m set that the runs have, Delta_m, parameters."""
    have = available(runs)
    datasets = list(dict.fromkeys(run.dataset for run in runs))
    sets = {name: standard_set(name) if name else None for name in datasets}
    unknown = [name for name, chosen in sets.items() if chosen is None]
    if unknown:
        names = ", ".join("unrecorded" if name is None else repr(name) for name in unknown)
        return have, [
            f"no Delta_m metric set for dataset {names}: showing every metric (choose with --metrics task/metric ...)"
        ]
    wanted = list(dict.fromkeys(m for chosen in sets.values() for m in chosen or ()))
    notes = [f"not in any run: {', '.join(m for m in wanted if m not in have)}"] if set(wanted) - set(have) else []
    chosen = [m for m in [*wanted, DELTA_M, PARAMETERS] if m in have]
    if not chosen:
        return have, [*notes, "none of the Delta_m metrics is in the runs: showing every metric"]
    return chosen, notes


def select_metrics(runs: Sequence[RunResult], requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(metrics, notes) for `--metrics`: the default set, `all`, or the named ones (each must exist); each
    followed by its difference to the paper where runs of a paper preset have one."""
    metrics, notes = chosen_metrics(runs, requested)
    return beside(metrics, available(runs)), notes


def chosen_metrics(runs: Sequence[RunResult], requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if not requested:
        return default_metrics(runs)
    have = available(runs)
    if list(requested) == [ALL]:
        return have, []
    for metric in requested:
        if split_metric(metric) is None:
            raise UserError(f"--metrics {metric}: expected task/metric, e.g. semseg/mIoU (or `all`)")
        if metric not in have:
            raise UserError(f"--metrics {metric}: no run has it; the runs have {', '.join(have)}")
    return list(dict.fromkeys(requested)), []
