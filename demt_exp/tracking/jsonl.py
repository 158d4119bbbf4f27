"""The JSON-lines history of a run (`metrics.jsonl`, one record per logged step)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class JsonlHistory:
    """Appends {"step": step, **values} to `path`; the sink every run folder reads back (compare, resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, step: int, values: Mapping[str, float | str]) -> None:
        """Numbers as floats, labels (e.g. `model/init`) as text."""
        record: dict[str, Any] = {"step": step, **{k: v if isinstance(v, str) else float(v) for k, v in values.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop the records of steps after `step` (a killed run's, about to be logged again); returns how many."""
        if not self.path.is_file():
            return 0
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if (record := parse_record(line)) is not None and record["step"] <= step]
        if len(kept) != len(lines):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        return len(lines) - len(kept)


def parse_record(line: str) -> dict[str, Any] | None:
    """A history record, or None for the partial line a kill -9 can leave at the end."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a `metrics.jsonl` (none when the file does not exist)."""
    if not path.is_file():
        return []
    return [record for line in path.read_text().splitlines() if (record := parse_record(line)) is not None]
