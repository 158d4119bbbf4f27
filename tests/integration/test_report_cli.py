"""`python -m demt_exp.report` run as a user runs it: the printout and the JSON file hold SPEC 1.9's count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from paths import REPO_ROOT

NYUD = ["tasks=nyud", "dataset.num_semseg_classes=40"]


def test_command_line_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, "-m", "demt_exp.report", "model", "--no-macs", *NYUD, "--json", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "32,070,259" in done.stdout
    assert json.loads(path.read_text())["parameters"]["total"] == 32_070_259
