"""`python -m demt_exp.evaluate checkpoint=PATH [overrides]`: score a checkpoint on the val split.

Builds model and data from the checkpoint's stored config (or the composed one for files
without a config), evaluates the val split only, at batch 1 by default, on one process or
sharded under torchrun (every image exactly once; pooled sums make the result the same).
Writes to the Hydra run folder: `metrics.json` ({task: {metric: value}}, Delta_m under
`multi_task` when references are given, and a `protocol` record), `metrics.jsonl`,
`edge_preds/<id>.png` (SEISM's input, cropped to the original size) and `panels/<id>.png`
for the first `eval.panels` images.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from demt_exp.config.compose import CONF_DIR
from demt_exp.engine.from_checkpoint import composable
from demt_exp.engine.run_folder import redirect_other_ranks, run_job
from demt_exp.utils.errors import UserError

if TYPE_CHECKING:
    pass

log = logging.getLogger("demt_exp")

CONFIG_NAME = "evaluate"


def run(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Evaluate the checkpoint `cfg.checkpoint` as the command line `overrides` describes it."""
    # The engine is imported here, not at the top: `--help` answers before torch would load.
    from demt_exp.engine.checkpoint_eval import evaluate_checkpoint
    from demt_exp.engine.distributed import cleanup, init_distributed
    from demt_exp.engine.from_checkpoint import inference_config
    from demt_exp.utils.collectives import broadcast_from_main

    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise UserError("no checkpoint given: python -m demt_exp.evaluate checkpoint=PATH [overrides]")
    info = init_distributed(str(cfg.trainer.device))
    try:
        out_dir = Path(broadcast_from_main(HydraConfig.get().runtime.output_dir))
        config, payload = inference_config(str(cfg.checkpoint), overrides, CONFIG_NAME)
        return evaluate_checkpoint(config, payload, out_dir, info)
    finally:
        cleanup()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    """The command: a user's mistake (a file, key or value) is one `error:` line and exit code 2."""
    overrides = HydraConfig.get().overrides
    command = composable([*overrides.hydra, *overrides.task])
    partial = "; {out_dir} holds the files of the images scored so far, and no metrics.json"
    run_job(lambda: run(cfg, command), HydraConfig.get().runtime.output_dir, partial)


if __name__ == "__main__":
    redirect_other_ranks(sys.argv)  # torchrun: every rank works in rank 0's run folder
    main()
