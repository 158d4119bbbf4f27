"""Metrics records of a run: JSON-lines history, final `metrics.json`, console table (main process only)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("demt_exp")

Nested = Mapping[str, Mapping[str, float]]


def flatten(prefix: str, metrics: Nested) -> dict[str, float]:
    """{task: {name: v}} -> {"prefix/task/name": v}, the key layout of every record and dashboard."""
    return {f"{prefix}/{task}/{name}": float(value) for task, values in metrics.items() for name, value in values.items()}


class Tracker:
    """Writes `metrics.jsonl` (one record per logged step) and `metrics.json`; silent off the main process."""

    def __init__(self, out_dir: str | Path, enabled: bool, history_name: str = "metrics.jsonl") -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.history_path = self.out_dir / history_name
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, values: Mapping[str, float | str]) -> None:
        """Append one record {"step": step, **values} to the history (numbers as floats, labels as text)."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step, **{k: v if isinstance(v, str) else float(v) for k, v in values.items()}}
        with self.history_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop the records of steps after `step` (a killed run's, about to be logged again); returns how many."""
        if not self.enabled or not self.history_path.is_file():
            return 0
        lines = self.history_path.read_text().splitlines()
        kept = [line for line in lines if (record := _parse(line)) is not None and record["step"] <= step]
        if len(kept) != len(lines):
            tmp = self.history_path.with_name(f".{self.history_path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.history_path)
        return len(lines) - len(kept)

    def write_summary(self, metrics: Nested, name: str = "metrics.json") -> Path | None:
        """Final metrics per task as {task: {metric: value}}."""
        if not self.enabled:
            return None
        path = self.out_dir / name
        path.write_text(json.dumps({t: dict(v) for t, v in metrics.items()}, indent=2, sort_keys=True) + "\n")
        return path


def _parse(line: str) -> dict[str, Any] | None:
    """A history record, or None for the partial line a kill -9 can leave at the end."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


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
