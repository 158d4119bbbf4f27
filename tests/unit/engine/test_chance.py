"""trainer.chance_reference: when a run also scores the constant predictor."""

from __future__ import annotations

import pytest

from demt_exp.engine.chance import wants_chance_reference


def test_chance_reference_setting() -> None:
    assert wants_chance_reference("auto", "synthetic") and not wants_chance_reference("auto", "nyud")
    assert wants_chance_reference(True, "nyud") and not wants_chance_reference(False, "synthetic")
    with pytest.raises(ValueError, match="trainer.chance_reference='sometimes'"):
        wants_chance_reference("sometimes", "nyud")
