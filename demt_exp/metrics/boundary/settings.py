"""What an evaluation asks of the SEISM boundary metric, and what its result file records of it.

The settings become `MetricContext.options["boundary"]` (read by `EdgeBoundary.from_context`):
the protocol name, the image list's ids (None: every val image) and the number of counting
processes. The record says which protocol, tolerance and images the numbers belong to, since
numbers of different protocols or image lists are not comparable.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from demt_exp.metrics.boundary.edge_task import WIRED_DATASETS
from demt_exp.metrics.boundary.images import read_image_list
from demt_exp.metrics.boundary.parallel import workers_per_process
from demt_exp.metrics.boundary.protocol import boundary_protocol

__all__ = ["boundary_settings", "counting_workers"]


def counting_workers(value: int | None) -> int:
    """eval.boundary_workers: None = this process's share of the cores, 0 = count in process."""
    if value is None:
        return workers_per_process()
    if int(value) < 0:
        raise ValueError(
            f"eval.boundary_workers={value}; expected null (all cores), 0 (in process) or a positive count"
        )
    return int(value)


def boundary_settings(
    protocol: str,
    dataset: str,
    tasks: Sequence[str],
    image_list: str | Path | None,
    workers: int | None,
    val_ids: Collection[str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(options["boundary"], the protocol record for metrics.json)."""
    scored = "edge" in tasks and dataset in WIRED_DATASETS
    settings: dict[str, Any] = {"protocol": protocol, "workers": counting_workers(workers), "image_ids": None}
    record = {"boundary": protocol}
    if scored:
        record["boundary_max_dist"] = str(boundary_protocol(protocol, dataset).max_dist)
    if image_list is None:
        return settings, record
    if not scored:
        raise ValueError(
            f"eval.boundary_image_list={image_list}: it restricts the SEISM boundary metric of the edge task, "
            f"which data set {dataset!r} with tasks {list(tasks)} does not have (boundary data sets: "
            f"{list(WIRED_DATASETS)}, with edge among the tasks)"
        )
    if val_ids is None:
        raise ValueError(f"eval.boundary_image_list={image_list}: the {dataset} val set does not list its image ids")
    ids = read_image_list(image_list, val_ids, dataset)
    settings["image_ids"] = ids
    record["boundary_image_list"] = str(Path(image_list).expanduser().resolve())
    record["boundary_images"] = str(len(ids))
    return settings, record
