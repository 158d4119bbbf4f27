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

from demt_exp.config.objective import register_resolver

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SOURCE_ROOT = PACKAGE_DIR.parent


def _shipped(folder: str, marker: str) -> Path:
    """`<checkout>/<folder>` in a source checkout (what users edit), else the copy inside the wheel."""
    source = SOURCE_ROOT / folder
    return (
        source if (source / marker).is_file() and (SOURCE_ROOT / "pyproject.toml").is_file() else PACKAGE_DIR / folder
    )


CONF_DIR = str(_shipped("conf", "config.yaml"))
# The ready ablations (`+sweep=NAME`) live in the top-level `sweeps/` folder; conf/sweep and conf/arch
# link to its groups, so every app (train, evaluate, predict) finds them without a search path.
SWEEPS_DIR = str(_shipped("sweeps", "README.md"))
CONFIG_NAME = "config"
register_resolver()  # `${objective_direction:...}` and hydra/sweeper=optuna's settings, for every app


def compose_config(
    overrides: Sequence[str] = (), config_name: str = CONFIG_NAME, return_hydra_config: bool = False
) -> DictConfig:
    """The config `python -m demt_exp <overrides>` would run with (and its `hydra` node if asked).

    Inside a running Hydra app (e.g. evaluate re-composing for a checkpoint's dataset) Hydra is
    already initialised on `CONF_DIR`, so compose directly.
    """
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
