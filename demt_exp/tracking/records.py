"""The key layout shared by every sink and dashboard, and the console table of final metrics."""

from __future__ import annotations

import math
from typing import Mapping

Nested = Mapping[str, Mapping[str, float]]


def flatten(prefix: str, metrics: Nested) -> dict[str, float]:
    """{task: {name: v}} -> {"prefix/task/name": v}, the key layout of every record and dashboard."""
    return {f"{prefix}/{task}/{name}": float(value) for task, values in metrics.items() for name, value in values.items()}


def format_table(model: Nested, reference: Nested, reference_name: str = "constant baseline") -> str:
    """Plain-text table of the final metrics beside the chance-level reference."""
    rows = [("task", "metric", "model", reference_name)]
    for task, values in model.items():
        for name, value in values.items():
            ref = reference.get(task, {}).get(name, math.nan)
            rows.append((task, name, f"{value:.4f}", f"{ref:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
