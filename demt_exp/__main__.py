"""`python -m demt_exp [overrides]`: compose `conf/`, then train and evaluate in the Hydra run folder.

Only Hydra and the config checks load before the job starts, so `--help` and a config mistake
answer in about a second; torch and the models load once the config is known to be valid.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from demt_exp.config.checks import validate_settings
from demt_exp.config.compose import CONF_DIR, CONFIG_NAME
from demt_exp.config.errors import report_unknown_keys
from demt_exp.config.objective import objective_value
from demt_exp.engine.run_folder import redirect_other_ranks, run_job
from demt_exp.utils.errors import EXIT_CODE

JOBS_STARTED: list[str] = []  # run folders of the jobs Hydra started in this process


def train_and_evaluate(cfg: DictConfig, out_dir: str) -> float | list[float] | None:
    """The job: checks, training, evaluation; returns the configured objective(s) for sweepers."""
    validate_settings(cfg)
    from demt_exp.engine.trainer import run  # torch and the models: only for a config that passed its checks

    results = run(cfg, out_dir)
    return objective_value(cfg.get("objective"), results)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | list[float] | None:
    """Hydra entry point; a config mistake is one line on stderr and exit 2, with no run folder left."""
    out_dir = HydraConfig.get().runtime.output_dir
    JOBS_STARTED.append(out_dir)
    # A Ctrl-C reaches here as the second one (or before training began): every save is atomic
    continued = "; nothing in {out_dir} is half-written: the same command continues its last checkpoint"
    return run_job(lambda: train_and_evaluate(cfg, out_dir), out_dir, continued)  # type: ignore[return-value]


def cli() -> None:
    """Console entry point: Hydra's app; a command line Hydra cannot compose (an unknown key or option) adds
    the valid keys and exits 2 like every other config mistake."""
    redirect_other_ranks(sys.argv)  # torchrun/srun: every rank works in rank 0's run folder
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not JOBS_STARTED:  # Hydra failed before any job ran: it could not compose
            report_unknown_keys()
            raise SystemExit(EXIT_CODE) from None
        raise


if __name__ == "__main__":
    cli()
