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
from demt_exp.utils.errors import ConfigError, UserError

if TYPE_CHECKING:
    import torch

    from demt_exp.engine.distributed import DistInfo

log = logging.getLogger("demt_exp")

CONFIG_NAME = "evaluate"
BOUNDARY_PROTOCOLS = ("atrc", "invpt")
SEISM_EDGE_DIR = "edge_preds"


def split_labels(results: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Numbers per task, and the text a metric reports beside them (e.g. its protocol) as "task/name"."""
    numbers = {t: {k: float(v) for k, v in values.items() if not isinstance(v, str)} for t, values in results.items()}
    labels = {f"{t}/{k}": v for t, values in results.items() for k, v in values.items() if isinstance(v, str)}
    return numbers, labels


def evaluate_checkpoint(
    cfg: DictConfig, payload: dict[str, Any] | None, out_dir: Path, info: DistInfo
) -> dict[str, Any]:
    """Evaluate, write the per-image files and (rank 0) metrics.json; returns what metrics.json holds."""
    # The engine is imported here, not at the top: `--help` answers before torch would load.
    from hydra.utils import instantiate

    from demt_exp.engine.evaluator import eval_loader, evaluate
    from demt_exp.engine.from_checkpoint import load_inference_model
    from demt_exp.engine.precision import autocast_factory
    from demt_exp.metrics import MetricContext
    from demt_exp.metrics.boundary.edge_task import val_dataset_options
    from demt_exp.metrics.boundary.settings import boundary_settings
    from demt_exp.viz.prediction_files import PredictionWriter

    protocol = str(cfg.eval.boundary_protocol)
    if protocol not in BOUNDARY_PROTOCOLS:
        raise ConfigError(f"eval.boundary_protocol={protocol!r}; expected one of {list(BOUNDARY_PROTOCOLS)}")
    tasks = list(cfg.tasks.names)
    num_classes = int(cfg.dataset.num_semseg_classes)
    model = load_inference_model(cfg.checkpoint, cfg, payload).to(info.device)
    dataset = str(cfg.dataset.name)
    # The val split only: nothing here reads the training set.
    val_set = instantiate(cfg.dataset.val, **val_dataset_options(dataset, tasks))
    boundary, boundary_record = boundary_settings(
        protocol,
        dataset,
        tasks,
        cfg.eval.get("boundary_image_list"),
        cfg.eval.get("boundary_workers"),
        getattr(val_set, "ids", None),
    )
    loader = eval_loader(val_set, int(cfg.eval.batch_size), info.rank, info.world_size, int(cfg.eval.num_workers))
    task_dirs = {"edge": SEISM_EDGE_DIR} if "edge" in tasks and cfg.eval.edge_pngs else {}
    writer = PredictionWriter(out_dir, task_dirs, panels=int(cfg.eval.panels))
    positions = iter(loader.sampler)

    def write(batch: dict[str, Any], preds: dict[str, torch.Tensor]) -> None:
        writer.write_batch(batch, preds, [next(positions) for _ in range(batch["image"].shape[0])])

    context = MetricContext(num_classes, dataset, {"boundary": boundary})
    autocast = autocast_factory(str(cfg.trainer.precision), info.device)
    results = evaluate(
        model, loader, tasks, num_classes, info.device, on_batch=write, context=context, autocast=autocast
    )
    return write_record(cfg, results, len(val_set), boundary_record, out_dir, info)


def write_record(
    cfg: DictConfig,
    results: dict[str, dict[str, Any]],
    images: int,
    boundary_record: dict[str, str],
    out_dir: Path,
    info: DistInfo,
) -> dict[str, Any]:
    """metrics.json (with Delta_m when references are given), metrics.jsonl and the console table."""
    from demt_exp.metrics.delta_m import delta_m_record
    from demt_exp.tracking import Tracker, flatten, format_table

    results, labels = split_labels(results)
    multi_task, delta_protocol = delta_m_record(cfg, results, info.is_main)
    record: dict[str, Any] = dict(results)
    if multi_task:
        record["multi_task"] = multi_task
    record["protocol"] = {
        "split": "val",
        "images": str(images),
        "checkpoint": str(cfg.checkpoint),
        **boundary_record,
        "edge_metrics": ",".join(sorted(results.get("edge", {}))),
        **labels,
        **delta_protocol,
    }
    if info.is_main and "edge" in cfg.tasks.names and "odsF" not in results.get("edge", {}):
        log.warning("edge: only the pixel proxy pixel_maxF was computed; it is not the SEISM odsF of the papers")
    tracker = Tracker(out_dir, info.is_main)
    tracker.log(0, flatten("val", {**results, **({"multi_task": multi_task} if multi_task else {})}))
    tracker.write_summary(record)
    if info.is_main:
        log.info(
            "validation metrics of %s (%d images, %d processes):\n%s",
            cfg.checkpoint,
            images,
            info.world_size,
            format_table(results),
        )
    return record


def run(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Evaluate the checkpoint `cfg.checkpoint` as the command line `overrides` describes it."""
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
