"""`hydra/sweeper=optuna` with this suite's settings, in place of hydra-optuna-sweeper's own.

The plugin registers its config as the structured node `hydra/sweeper/optuna`; a YAML file of that name
would be validated against it, so this registers a subclass under the same name instead. Hydra runs each
plugin's module again when it scans for plugins, once per process, so the scan is done first and the node
stored after it. What it changes:
- direction: each objective metric's own (`${objective_direction:${objective}}`: mIoU and Delta_m
  maximize, rmse and angles minimize); a list of metrics is a multi-objective (Pareto) search.
  `hydra.sweeper.direction=...` sets it by hand.
- storage: `optuna.db` in the multirun folder, study `search`; the same command with the same
  `hydra.sweep.dir` continues an interrupted search (`hydra_plugins/demt_exp_search/continued_optuna.py`).
- n_jobs: 1 (the basic launcher runs one trial at a time); with hydra/launcher=slurm or local, the number
  of trials submitted together.
Everything else (samplers, n_trials, params, max_failure_rate) is the plugin's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

from demt_exp.config.objective import STUDY_NAME
from hydra_plugins.demt_exp_search.continued_optuna import ContinuedOptunaSweeper


@dataclass
class SuiteOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.demt_exp_search.continued_optuna.ContinuedOptunaSweeper"
    direction: Any = "${objective_direction:${objective}}"
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: Any = STUDY_NAME
    n_jobs: int = 1


def register() -> None:
    Plugins.instance()  # the plugin scan, which stores the plugin's own node: before ours, not after
    # Registered by hand too: the scan walks `hydra_plugins` folders and misses a package installed in
    # editable mode (pip install -e .), whose files a path hook serves from outside any such folder.
    Plugins.instance().register(ContinuedOptunaSweeper)
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=SuiteOptunaSweeperConf, provider="demt_exp")
