"""Under CI=true a skipped test fails the run (tests/helpers/ci_skips.py), except a skip for a missing GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paths import HELPERS_DIR

SAMPLE = """
import pytest

def test_fidelity():
    pytest.skip("official key list not found")

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_on_gpu():
    pass

def test_plain():
    assert 1 + 1 == 2
"""


def run_pytest(directory: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on the sample file with only the CI plugin loaded (no project config)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(HELPERS_DIR), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "ci_skips",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        str(directory),
        "-rA",
        str(directory / "test_sample.py"),
    ]
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_skip_fails_under_ci_but_a_missing_gpu_may_skip(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = run_pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 skipped" in result.stdout, result.stdout
    assert "skipped under CI=true" in result.stdout and "official key list not found" in result.stdout
    assert "FAILED test_sample.py::test_fidelity" in result.stdout


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = run_pytest(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout, result.stdout
