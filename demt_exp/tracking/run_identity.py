"""Where a run sits in a multirun: the W&B group (the sweep folder) and name (the job's overrides)."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def hydra_group_and_name() -> tuple[str | None, str | None]:
    """(sweep folder, override_dirname) under a Hydra multirun job; (None, overrides or None) otherwise."""
    if not HydraConfig.initialized():
        return None, None
    hydra = HydraConfig.get()
    name = str(hydra.job.override_dirname) or None
    group = str(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
    return group, name
