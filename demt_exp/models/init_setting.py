"""What `model.init` asks for: a weights file, or a random start (light: no torch, so config checks stay fast).

`demt_exp.models.load_weights.apply_init` does the loading.
"""

from __future__ import annotations

from typing import Any

RANDOM = "random"

RANDOM_WARNING = (
    "model.init is not set (or is `random`): this run starts from RANDOM weights (backbone included) and is recorded "
    "as init: random. The paper recipes start from the official backbone checkpoint; give it with "
    "model.init=<file> (see the experiment preset, or `python -m demt_exp.report presets`)."
)


def init_file(cfg: Any) -> str | None:
    """The file `model.init` names, or None for a random start."""
    value = (cfg.get("model") or {}).get("init")
    return None if value in (None, "", RANDOM) else str(value)


def describe_init(cfg: Any) -> str:
    """What a run starts from: the `model.init` file, or "random"."""
    return init_file(cfg) or RANDOM


def init_record(description: str) -> dict[str, str]:
    """The run-metrics entry that says what the run started from."""
    return {"model/init": description}
