"""Run by torchrun in test_distributed.py: one DDP training step with the suite's own pieces.

Each rank saves its parameters and the indices of its half-batch so the test can compare
both ranks with a single process that averages the gradients of the two half-batches; with
the configured `weighting` strategy, also its state, its weights and every step's losses
(`+worker_steps=N` runs N steps, for strategies whose weights need a history).

    ddp_worker.py OUT_DIR OVERRIDES...   one job: OUT_DIR/rank{r}.pt
    ddp_worker.py JOBS.json              {"out_dir": [overrides...], ...}: every job in turn in one process
                                         group, each seeded afresh (one torch start-up for many jobs)

The tests pass TINY_RUN's small Swin: these jobs exercise the DDP code, not the model's size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from demt_exp.config.compose import compose_config
from demt_exp.engine.distributed import cleanup, init_distributed, wrap_distributed
from demt_exp.engine.evaluator import to_device
from demt_exp.engine.loader import batches_forever, train_loader
from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
from demt_exp.engine.rng import seed_everything
from demt_exp.engine.step import train_step
from demt_exp.losses.task_losses import build_loss
from demt_exp.models.model import build_model
from demt_exp.weighting import build_weighting


def main(out_dir: str, overrides: list[str]) -> None:
    cfg = compose_config(overrides)
    info = init_distributed("cpu")  # joins the group once; a later job finds it joined
    seed_everything(int(cfg.trainer.seed))
    model = build_model(cfg)
    optimizer = build_optimizer(cfg.optimizer, model)
    loss_fn = build_loss(cfg.tasks)
    weighting = build_weighting(cfg.weighting, cfg.tasks.names, loss_fn.weights)
    if (group := weighting.param_group(float(cfg.optimizer.lr))) is not None:
        optimizer.add_param_group(group)
    scheduler = build_poly_scheduler(optimizer, int(cfg.trainer.steps))
    net = wrap_distributed(model, info, bool(cfg.trainer.find_unused_parameters))
    batches = batches_forever(train_loader(instantiate(cfg.dataset.train), info, cfg.trainer), 0)
    losses = []
    for _ in range(int(cfg.get("worker_steps", 1))):
        batch = next(batches)
        indices = [int(i.rsplit("_", 1)[1]) for i in batch["meta"]["id"]]
        result = train_step(
            net,
            to_device(batch, info.device),
            loss_fn,
            optimizer,
            scheduler,
            lambda: torch.autocast("cpu", enabled=False),
            None,
            weighting=weighting,
        )
        losses.append([float(v) for v in result.per_task.values()])
    torch.save(
        {
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "indices": indices,
            "weighting": weighting.state_dict(),
            "weights": weighting.weights(),
            "losses": losses,
        },
        Path(out_dir) / f"rank{info.rank}.pt",
    )


if __name__ == "__main__":
    if sys.argv[1].endswith(".json"):
        for job_dir, job_overrides in json.loads(Path(sys.argv[1]).read_text()).items():
            Path(job_dir).mkdir(parents=True, exist_ok=True)
            main(job_dir, job_overrides)
    else:
        main(sys.argv[1], sys.argv[2:])
    cleanup()
