"""Multi-task loss weighting strategies, one module per method (the `weighting` config group)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig

from demt_exp.weighting.base import LossWeighting
from demt_exp.weighting.dwa import DWAWeighting
from demt_exp.weighting.fixed import FixedWeighting
from demt_exp.weighting.gradnorm import GradNormWeighting
from demt_exp.weighting.pcgrad import PCGradWeighting
from demt_exp.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "DWAWeighting",
    "FixedWeighting",
    "GradNormWeighting",
    "LossWeighting",
    "PCGradWeighting",
    "UncertaintyWeighting",
    "build_weighting",
]


def build_weighting(
    weighting_cfg: DictConfig | None, tasks: Sequence[str], task_weights: Mapping[str, float]
) -> LossWeighting:
    """The configured strategy for these tasks; no config means the official fixed weights."""
    if weighting_cfg is None:
        return FixedWeighting(tasks, task_weights)
    strategy = instantiate(weighting_cfg, tasks=list(tasks), task_weights=dict(task_weights))
    if not isinstance(strategy, LossWeighting):
        raise TypeError(
            f"weighting._target_={weighting_cfg.get('_target_')!r} built a {type(strategy).__name__}, "
            f"expected a demt_exp.weighting.LossWeighting"
        )
    return strategy
