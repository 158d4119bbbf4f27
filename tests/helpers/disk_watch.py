"""The disk a test run takes, printed at its end beside the slowest tests.

A thread samples the free space of the file system that holds pytest's temporary folders twice a second;
the run's peak is how far it fell below the free space at the start (other writers on the machine count
too, so it is an upper bound). Under pytest-xdist only the controller watches, for all workers at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

MIB = 2**20
INTERVAL_S = 0.5


class DiskWatch:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.start = self.low = shutil.disk_usage(folder).free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="disk-watch", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.low = min(self.low, shutil.disk_usage(self.folder).free)

    def stop(self) -> int:
        """The peak, in bytes, the free space fell below its value at the start."""
        self._stop.set()
        self._thread.join()
        self.low = min(self.low, shutil.disk_usage(self.folder).free)
        return self.start - self.low


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


WATCH = pytest.StashKey[DiskWatch]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller watches
        return
    basetemp = config.option.basetemp or tempfile.gettempdir()
    Path(basetemp).mkdir(parents=True, exist_ok=True)
    config.stash[WATCH] = DiskWatch(Path(basetemp))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    watch = config.stash.get(WATCH, None)
    if watch is None:
        return
    peak = watch.stop()
    factory = getattr(config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None and factory._basetemp is not None else None
    left = f"; {base} holds {folder_size(base) / MIB:.0f} MiB now" if base is not None and base.is_dir() else ""
    terminalreporter.write_sep("=", "disk")
    terminalreporter.write_line(
        f"peak disk used by the run: {peak / MIB:.0f} MiB (free space on {watch.folder}, sampled every "
        f"{INTERVAL_S} s){left}"
    )
