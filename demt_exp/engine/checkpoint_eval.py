"""Score one checkpoint on the val split: the model and data it stands for, the evaluator, and the record
(`metrics.json` with Delta_m and the protocol, `metrics.jsonl`, SEISM's edge PNGs, panels)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from demt_exp.data.contract import check_dataset
from demt_exp.engine.distributed import DistInfo
from demt_exp.utils.errors import ConfigError

log = logging.getLogger("demt_exp")

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
    val_set = check_dataset(instantiate(cfg.dataset.val, **val_dataset_options(dataset, tasks)), tasks, "val")
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
