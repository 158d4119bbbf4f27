"""Metric sinks of a run: JSON-lines history (always), Weights & Biases (optional extra), `metrics.json`."""

from demt_exp.tracking.jsonl import read_history
from demt_exp.tracking.records import flatten, format_table
from demt_exp.tracking.tracker import Tracker, build_tracker, finish_open

__all__ = ["Tracker", "build_tracker", "finish_open", "flatten", "format_table", "read_history"]
