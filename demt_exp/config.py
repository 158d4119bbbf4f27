"""The one place that finds and composes the project's Hydra configs, for every command.

Training (`python -m demt_exp`), evaluate, report, convert, data, bench and the tests all
compose through here, so a config means the same thing whichever command reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
CONFIG_NAME = "config"


def compose_config(overrides: Sequence[str] = (), config_name: str = CONFIG_NAME) -> DictConfig:
    """The config `python -m demt_exp <overrides>` would run with.

    Inside a running Hydra app (e.g. evaluate re-composing for a checkpoint's dataset) Hydra is
    already initialised on `CONF_DIR`, so compose directly.
    """
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
