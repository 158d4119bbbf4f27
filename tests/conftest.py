"""Shared fixtures and hooks, and `tests/helpers/` on the import path of every test (fakes, references, command
runners)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import disk_watch  # noqa: E402  (the disk a run takes, printed at its end)
import parallel  # noqa: E402  (pytest-xdist: workers, threads, shared resources)
from ci_skips import pytest_runtest_makereport  # noqa: E402, F401  (hook: no silent skips under CI=true)
from disk_watch import pytest_terminal_summary  # noqa: E402, F401
from omegaconf import DictConfig  # noqa: E402
from parallel import pytest_collection_modifyitems, pytest_xdist_auto_num_workers  # noqa: E402, F401

from demt_exp.config.compose import compose_config  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    disk_watch.pytest_configure(config)
    parallel.pytest_configure(config)


@pytest.fixture
def compose() -> Callable[[list[str]], DictConfig]:
    """compose(overrides) -> the config `python -m demt_exp <overrides>` would run with."""

    return compose_config
