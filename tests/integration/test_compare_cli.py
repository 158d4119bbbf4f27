"""`python -m demt_exp.compare` run as a user runs it: a refused command exits 2 with one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paths import REPO_ROOT


def test_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "demt_exp.compare", str(tmp_path / "nope")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"compare: error: {tmp_path / 'nope'} does not exist (expected a run folder or a multirun folder)"
    ]
