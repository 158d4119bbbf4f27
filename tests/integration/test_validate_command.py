"""The training command checks its config before building anything (the checks themselves:
tests/unit/config/test_validate.py)."""

from __future__ import annotations

import pytest
from commands import TINY_RUN, run_cli


@pytest.mark.slow
def test_the_command_fails_on_a_bad_value_before_building_anything(tmp_path) -> None:
    result = run_cli(*TINY_RUN, "trainer.eval_interval=0", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "trainer.eval_interval=0; expected an integer >= 1" in result.stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "config.yaml").exists()
