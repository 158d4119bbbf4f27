"""`python -m demt_exp [overrides]`: compose `conf/`, then train and evaluate in the Hydra run folder."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from demt_exp.config import CONF_DIR, CONFIG_NAME
from demt_exp.config_errors import report_unknown_keys
from demt_exp.train import run


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the configured objective so sweepers can optimise it."""
    results = run(cfg, HydraConfig.get().runtime.output_dir)
    objective = cfg.get("objective")
    if objective and results:
        task, name = str(objective).split("/")
        return results[task][name]
    return None


def cli() -> None:
    """Console entry point: Hydra's app, plus valid-key hints when an override names an unknown key."""
    try:
        main()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            report_unknown_keys()
        raise


if __name__ == "__main__":
    cli()
