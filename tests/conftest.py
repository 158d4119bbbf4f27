"""Shared fixtures: composing the project's Hydra config without running the app."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
REPO_ROOT = Path(__file__).resolve().parent.parent

# Overrides that shrink the default job to seconds: tiny images, few samples, a narrow head.
TINY_RUN = [
    "dataset.image_size=[32,32]",
    "dataset.val.num_samples=4",
    "encoder.dim=32",
    "trainer.batch_size=4",
    "logger.progress_bar=false",
]


@pytest.fixture
def compose() -> Callable[[list[str]], DictConfig]:
    """compose(overrides) -> the config `python -m demt_exp <overrides>` would run with."""

    def _compose(overrides: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)

    return _compose
