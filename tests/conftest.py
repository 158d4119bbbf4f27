"""Shared fixtures, and `tests/helpers/` on the import path of every test (fakes, references, command runners)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from ci_skips import pytest_runtest_makereport  # noqa: E402, F401  (hook: no silent skips under CI=true)
from disk_watch import pytest_configure, pytest_terminal_summary  # noqa: E402, F401  (the disk a run takes)
from omegaconf import DictConfig  # noqa: E402

from demt_exp.config.compose import compose_config  # noqa: E402


@pytest.fixture
def compose() -> Callable[[list[str]], DictConfig]:
    """compose(overrides) -> the config `python -m demt_exp <overrides>` would run with."""

    return compose_config
