"""pytest-xdist on a small machine: how many workers, what each may use, and what must share one worker.

`-n auto` (pyproject's addopts) asks `pytest_xdist_auto_num_workers`: one worker per core, at most
MAX_WORKERS, since every end-to-end test starts processes of its own. Each worker, and the commands its
tests start, gets an equal share of the cores as torch threads (no oversubscription). Tests that need one
shared resource run on one worker: the local SLURM cluster (`slurm` marker). The long tests (`slow`) are
handed out first, so no worker is left with one of them at the end while the others idle.
"""

from __future__ import annotations

import os

import pytest

MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_configure(config: pytest.Config) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = threads  # the commands tests start inherit it
        import torch

        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow first, in file order
