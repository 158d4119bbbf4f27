"""Checkpoints for the evaluate / predict tests: a freshly initialised model saved exactly as the
training loop saves it (resume.build_payload), so the stored config travels with it; and a torch file
whose full unpickle runs code, the witness of the trust-boundary tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from commands import SMALL_SWIN
from omegaconf import DictConfig

from demt_exp.config.compose import compose_config
from demt_exp.engine.checkpoint import save_atomic
from demt_exp.engine.checkpoint_eval import evaluate_checkpoint
from demt_exp.engine.distributed import DistInfo
from demt_exp.engine.from_checkpoint import inference_config
from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
from demt_exp.engine.resume import build_payload
from demt_exp.engine.rng import rng_state, seed_everything
from demt_exp.models.model import build_model

# A narrow model (the small Swin of the end-to-end runs) on tiny synthetic scenes: seconds per evaluation on a CPU.
TINY_MODEL = [*SMALL_SWIN, "encoder.dim=32", "backbone.drop_path_rate=0.0", "logger.progress_bar=false"]
ONE_CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY_SYNTHETIC = [*TINY_MODEL, "dataset.image_size=[32,32]", "dataset.val.num_samples=5", "dataset.train.num_samples=4"]


def write_checkpoint(path: Path, overrides: list[str], seed: int = 0) -> DictConfig:
    """A run's checkpoints/last.pt for the model `overrides` describe; returns its config."""
    cfg = compose_config(overrides)
    seed_everything(seed)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_poly_scheduler(optimizer, int(cfg.trainer.steps))
    save_atomic(build_payload(model, optimizer, scheduler, 0, cfg, [rng_state()], {}), path)
    return cfg


def run_evaluation(checkpoint: Path, out: Path, *overrides: str) -> dict:
    """What `python -m demt_exp.evaluate checkpoint=... <overrides>` does, in this process."""
    args = [f"checkpoint={checkpoint}", *overrides]
    cfg, payload = inference_config(str(checkpoint), args, "evaluate")
    evaluate_checkpoint(cfg, payload, out, ONE_CPU)
    return json.loads((out / "metrics.json").read_text())
