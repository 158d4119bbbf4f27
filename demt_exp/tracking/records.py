"""The key layout shared by every sink and dashboard, and the console table of final metrics."""

from __future__ import annotations

from collections.abc import Mapping

from demt_exp.utils.tables import text_table

Nested = Mapping[str, Mapping[str, float]]


def flatten(prefix: str, metrics: Nested) -> dict[str, float]:
    """{task: {name: v}} -> {"prefix/task/name": v}, the key layout of every record and dashboard."""
    return {
        f"{prefix}/{task}/{name}": float(value) for task, values in metrics.items() for name, value in values.items()
    }


def format_table(model: Nested, reference: Nested | None = None, reference_name: str = "constant baseline") -> str:
    """Plain-text table of the final metrics, beside a reference (e.g. the chance level) when one is given.

    Without a reference (None or empty) there is no reference column; a metric the reference lacks shows `-`.
    """
    rows = [("task", "metric", "model", *([reference_name] if reference else []))]
    for task, values in model.items():
        for name, value in values.items():
            cells = (task, name, f"{value:.4f}")
            if reference:
                ref = reference.get(task, {}).get(name)
                cells += ("-" if ref is None else f"{ref:.4f}",)
            rows.append(cells)
    return "\n".join(text_table(rows))
