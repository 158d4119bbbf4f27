"""pytest plugin: under CI=true a skipped test is a failure, unless it was skipped for want of a GPU.

A fidelity test that skips in CI (e.g. because a fixture is missing in a fresh clone) would
otherwise pass silently; the only skip CI accepts is a test that needs a CUDA device.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

GPU_WORDS = ("cuda", "gpu")


def skip_reason(report: pytest.TestReport) -> str:
    """The reason text of a skip report ((file, line, reason) tuple or plain text)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def allowed_in_ci(reason: str) -> bool:
    """Only a missing GPU may skip a test in CI."""
    return any(word in reason.lower() for word in GPU_WORDS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if os.environ.get("CI", "").lower() != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if not allowed_in_ci(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (only a missing GPU may skip in CI): {reason}"
