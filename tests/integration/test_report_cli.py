"""`python -m demt_exp.report` run as a user runs it: the printout and the JSON file hold SPEC 1.9's count."""

from __future__ import annotations

import json
from pathlib import Path

from commands import run_module

NYUD = ["tasks=nyud", "dataset.num_semseg_classes=40"]


def test_command_line_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "cli.json"
    done = run_module("demt_exp.report", "model", "--no-macs", *NYUD, "--json", str(path))
    assert "32,070,259" in done.stdout
    assert json.loads(path.read_text())["parameters"]["total"] == 32_070_259
