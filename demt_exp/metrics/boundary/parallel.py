"""Boundary counts in worker processes: one image per task, results added to a BoundaryMetric.

Counting is CPU-bound Python/NumPy work per image, so images are spread over processes
(threads would serialise on the interpreter lock). Workers start with "forkserver", which
is safe next to CUDA and torch threads; the server imports this module once and forks
workers from it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from demt_exp.metrics.boundary.counts import BoundaryMetric, image_counts, png_values
from demt_exp.metrics.boundary.protocol import BoundaryProtocol

__all__ = ["BoundaryCounter", "default_workers", "evaluate_boundaries", "workers_per_process"]


def default_workers() -> int:
    """All cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def workers_per_process() -> int:
    """This process's share of the cores when torchrun starts several on a node (LOCAL_WORLD_SIZE)."""
    return max(1, default_workers() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


class BoundaryCounter:
    """Submit (edge, gt_boundary) pairs; `finish()` adds every image's counts to `metric`.

    workers=0 counts in this process (no pool), which is what tests and tiny sets want.
    Images are sent as uint8 PNG values and bool ground truth to keep the pipes small.
    """

    def __init__(self, metric: BoundaryMetric, workers: int | None = None) -> None:
        self.metric = metric
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, edge: np.ndarray, gt_boundary: np.ndarray) -> None:
        values = png_values(edge)
        gt = np.asarray(gt_boundary) != 0
        if self.workers == 0:
            self.metric.add_counts(image_counts(values, gt, self.metric.protocol))
            return
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])  # import once in the server, not per worker
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        self._pending.append(self._pool.submit(image_counts, values, gt, self.metric.protocol))
        if len(self._pending) > 4 * self.workers:  # bound the memory held in flight
            self._drain(keep=2 * self.workers)

    def _drain(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self.metric.add_counts(self._pending.pop(0).result())

    def finish(self) -> BoundaryMetric:
        """Wait for all submitted images, shut the pool down, return the metric."""
        try:
            self._drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        return self.metric

    def __enter__(self) -> BoundaryCounter:  # noqa: PYI034 - a final class in practice
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.finish()
        elif self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def evaluate_boundaries(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], protocol: BoundaryProtocol, workers: int | None = None
) -> BoundaryMetric:
    """BoundaryMetric over (edge, gt_boundary) pairs, counted in `workers` processes."""
    with BoundaryCounter(BoundaryMetric(protocol), workers) as counter:
        for edge, gt in pairs:
            counter.submit(edge, gt)
    return counter.metric
