"""The one spelling of a metric's key, `task/metric` (`semseg/mIoU`, `multi_task/delta_m`), for every reader."""

from __future__ import annotations


def split_metric(key: str) -> tuple[str, str] | None:
    """(task, metric) of a `task/metric` key; None for anything else (an empty part, a second slash)."""
    task, sep, name = key.partition("/")
    if not (task and sep and name) or "/" in name:
        return None
    return task, name
