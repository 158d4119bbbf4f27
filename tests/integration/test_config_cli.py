"""Typos on the command line, as users run it: a group option or a key that does not exist fails naming what does
(composition itself: tests/unit/config/test_config.py)."""

from __future__ import annotations

import subprocess
import sys

from paths import REPO_ROOT

REPO = REPO_ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demt_exp", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_group_option_typo_lists_valid_options() -> None:
    result = cli("backbone=swin_x")
    assert result.returncode != 0
    assert "Could not find 'backbone/swin_x'" in result.stderr
    for option in ("swin_t", "swin_s", "swin_b"):
        assert option in result.stderr


def test_key_typo_names_the_key_and_lists_valid_keys() -> None:
    result = cli("trainer.stepz=3")
    assert result.returncode != 0
    assert "trainer.stepz" in result.stderr
    assert "valid keys of 'trainer'" in result.stderr and "steps" in result.stderr
