"""The compare command's figure: one panel per metric, one point per table row.

Each panel has one metric on its own axis with its unit (a percentage and an RMSE in metres do
not share a scale); rows are categories on the x axis, labelled by every swept key, so points
are not joined by lines (the runs of a sweep are not a series). A row of several seeds shows
its mean with the sample standard deviation as error bar and each run as a small dot; a
seeds-only sweep is one such row. A published row (runs of a paper preset) is a star with a dashed line
across its panel, so each run's distance to the paper reads off the axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from demt_exp.results.metrics import axis_label, unit_of
from demt_exp.results.published import compared_metric
from demt_exp.results.runs import Row, summarise
from demt_exp.results.search import Objective, search_marks
from demt_exp.results.table import Legend, printable

MAX_LABEL = 18  # longest value on a tick label; longer ones get a legend label
COLUMNS = 3


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`encoder.depth` -> `depth` where the last part is unique among the keys (labels stay short)."""
    tails = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: tail if tails.count(tail) == 1 else key for key, tail in zip(keys, tails)}


def tick_labels(keys: Sequence[str], rows: Sequence[Row], legend: Legend) -> list[str]:
    """One line per swept key (`depth=2`), and `n=3` for a row of several runs."""
    names = short_keys(keys)
    labels = []
    for row in rows:
        lines = [f"{names[k]}={legend.short(printable(row.params[k]), 'v', MAX_LABEL)}" for k in keys]
        if row.n > 1 or not keys:
            lines.append(f"n={row.n}" if keys else f"all runs, n={row.n}")
        labels.append("\n".join(lines))
    return labels


CHAR_IN = 0.06  # width of a 7-point tick label character, inches
MAX_PANEL_IN = 6.0


def label_width(labels: Sequence[str]) -> float:
    """Inches one category needs for its widest tick label line."""
    return CHAR_IN * max(len(line) for label in labels for line in label.split("\n")) + 0.2


def tilted(labels: Sequence[str]) -> bool:
    """Tick labels side by side would overlap even in the widest panel: turn them."""
    return label_width(labels) * len(labels) > MAX_PANEL_IN - 0.8


def panel_width(labels: Sequence[str]) -> float:
    if tilted(labels):
        return MAX_PANEL_IN
    return min(MAX_PANEL_IN, max(3.6, label_width(labels) * len(labels) + 0.8))


def _jitter(count: int) -> list[float]:
    """Offsets that spread a row's single runs side by side, left of the mean's marker (never under it)."""
    return [-0.2] if count == 1 else [-0.32 + 0.22 * i / (count - 1) for i in range(count)]


def draw_panel(axis, metric: str, rows: Sequence[Row], labels: Sequence[str], colours: Sequence) -> None:
    """Mean with error bar per row (no connecting line), the row's runs as dots behind it."""
    scale = unit_of(metric).scale
    for i, row in enumerate(rows):
        values = [v * scale for v in row.values.get(metric, [])]
        if not values:
            continue
        mean, std = summarise(values)
        if row.n == 0:  # a published row: the paper's number, a star and a line across the panel
            axis.axhline(values[0], color=colours[i], linestyle="--", linewidth=1, alpha=0.7, zorder=1)
            axis.plot(i, values[0], marker="*", markersize=11, color=colours[i], linestyle="none", zorder=3)
            continue
        if len(values) > 1:
            axis.scatter(
                [i + d for d in _jitter(len(values))], values, s=16, color=colours[i], alpha=0.5, linewidths=0, zorder=2
            )
        axis.errorbar(
            i, mean, yerr=None if math.isnan(std) else std, fmt="o", color=colours[i], capsize=4, markersize=6, zorder=3
        )
    if compared_metric(metric) != metric:  # a difference to the paper: 0 is the paper itself
        axis.axhline(0, color="grey", linewidth=0.8, zorder=1)
    axis.set_title(metric, fontsize=9)
    axis.set_ylabel(axis_label(metric), fontsize=8)
    tilt = tilted(labels)
    axis.set_xticks(range(len(rows)), labels, fontsize=7, rotation=35 if tilt else 0, ha="right" if tilt else "center")
    axis.ticklabel_format(axis="y", useOffset=False, style="plain")  # no "+3e1" offset above the axis
    axis.set_xlim(-0.6 if len(rows) > 1 else -1, len(rows) - 0.4 if len(rows) > 1 else 1)
    axis.tick_params(axis="y", labelsize=7)
    axis.grid(axis="y", alpha=0.3)


def caption(keys: Sequence[str], rows: Sequence[Row], legend: Legend) -> str:
    lines = [f"x: {', '.join(keys)}" if keys else "x: every run (only the seed differs)"]
    if any(row.n > 1 for row in rows):
        lines.append("point: mean over the row's runs (seeds); error bar: sample std (n - 1); dots: single runs")
    if any(row.n == 0 for row in rows):
        lines.append("star and dashed line: the published number of the paper row")
    return "\n".join(lines + legend.lines(110))


def build_figure(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str]):
    """The matplotlib figure: panels in rows of three, tick labels and caption sized to their text."""
    import matplotlib.pyplot as plt

    legend = Legend()
    labels = tick_labels(keys, rows, legend)
    ncols = min(len(metrics), COLUMNS)
    nrows = math.ceil(len(metrics) / ncols)
    label_lines = max(label.count("\n") + 1 for label in labels)
    longest = max(len(line) for label in labels for line in label.split("\n"))
    label_h = 0.14 * label_lines if not tilted(labels) else 0.6 * CHAR_IN * longest + 0.14 * label_lines
    panel_w, panel_h = panel_width(labels), 2.6 + label_h
    text = caption(keys, rows, legend)
    text_h = 0.16 * (text.count("\n") + 1) + 0.2
    figure, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows + text_h), squeeze=False)
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(rows))]
    for axis, metric in zip(axes.flat, metrics):
        draw_panel(axis, metric, rows, labels, colours)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.remove()
    figure.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left")
    figure.tight_layout(rect=(0, text_h / (panel_h * nrows + text_h), 1, 1))
    return figure


def plot_metrics(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str], path: Path) -> Path | None:
    """PNG at `path` (None without matplotlib): one panel per metric."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure = build_figure(keys, rows, metrics)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_front(objective: Objective, rows: Sequence[Row], path: Path) -> Path | None:
    """A two-objective search as a PNG at `path` (None without matplotlib): every trial a dot, the Pareto
    front joined in order, each axis saying which way is better."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    (x_metric, y_metric), marks = objective.metrics, search_marks(objective, rows)
    points = [
        (summarise(row.values[x_metric])[0], summarise(row.values[y_metric])[0], mark)
        for row, mark in zip(rows, marks)
        if row.n > 0 and row.values.get(x_metric) and row.values.get(y_metric)
    ]
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    axis.scatter([p[0] for p in points], [p[1] for p in points], s=18, color="grey", alpha=0.6, label="trial")
    on = sorted((x, y) for x, y, mark in points if mark)
    axis.plot([p[0] for p in on], [p[1] for p in on], "o-", color="tab:red", label="Pareto front")
    for axis_setter, metric, up in zip((axis.set_xlabel, axis.set_ylabel), objective.metrics, objective.maximize):
        axis_setter(f"{metric} [{axis_label(metric)}] ({'higher' if up else 'lower'} is better)", fontsize=8)
    axis.set_title(f"{len(points)} trials, {len(on)} on the front", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
