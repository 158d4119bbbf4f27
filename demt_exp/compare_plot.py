"""The compare command's figure: each metric against one swept parameter, one panel per task."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from demt_exp.compare import Row


def plot_metrics(key: str, rows: Sequence["Row"], path: Path) -> Path | None:
    """PNG at `path` (None without matplotlib); error bars are the std over seeds where there are several."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from demt_exp.compare import metric_names, summarise

    metrics = [m for m in metric_names(rows) if m != "model/parameters" and not m.endswith("/loss")]  # losses: own scale
    tasks = list(dict.fromkeys(m.split("/")[0] for m in metrics))
    labels = [row.params[key] for row in rows]
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for metric in (m for m in metrics if m.split("/")[0] == task):
            stats = [summarise(row.values[metric]) if metric in row.values else (math.nan, math.nan) for row in rows]
            axis.errorbar(range(len(rows)), [s[0] for s in stats], yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
                          marker="o", capsize=3, label=metric.split("/", 1)[1])
        axis.set_title(task)
        axis.set_xticks(range(len(rows)), labels, rotation=30, fontsize=7)
        axis.set_xlabel(key, fontsize=8)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
