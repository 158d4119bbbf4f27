"""The training loop: plain PyTorch, iteration based, single process or DDP (torchrun).

One step: next batch -> forward (optionally autocast) -> weighted multi-task loss ->
backward -> optimiser step -> poly lr step. Evaluation every `eval_interval` steps and at
the end; an atomic `checkpoints/last.pt` at every evaluation; rank 0 alone logs and writes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from demt_exp.baseline import ConstantPredictor
from demt_exp.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from demt_exp.compile import maybe_compile  # trainer.compile
from demt_exp.distributed import (
    DistInfo,
    broadcast_from_main,
    cleanup,
    init_distributed,
)
from demt_exp.evaluate import eval_loader, evaluate, to_device
from demt_exp.models.model import build_model
from demt_exp.optim import build_optimizer, build_poly_scheduler
from demt_exp.tracking import Tracker, flatten, format_table

log = logging.getLogger("demt_exp")

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context-manager factory for the requested precision (fp32 means no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}; expected one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("trainer.precision=fp16 needs a CUDA device; use bf16 on CPU")
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def build_loss(tasks_cfg: DictConfig) -> nn.Module:
    """The `tasks.loss` config restricted to the selected `tasks.names` (so task subsets need no new file)."""
    weights = tasks_cfg.loss.weights
    missing = [t for t in tasks_cfg.names if t not in weights]
    if missing:
        raise KeyError(f"tasks.loss.weights has no weight for {missing}; it lists {list(weights)}")
    loss_cfg = OmegaConf.to_container(tasks_cfg.loss, resolve=True)
    # Replace, not merge: instantiate() would merge a weights kwarg into the configured dict.
    loss_cfg["weights"] = {t: float(weights[t]) for t in tasks_cfg.names}
    return instantiate(loss_cfg)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose first epoch can start part-way, so a resumed run sees the same batches."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int) -> None:
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


def batches_forever(loader: DataLoader, start_step: int) -> Iterator[dict[str, Any]]:
    """Endless stream of batches, one epoch after another, positioned at `start_step`."""
    sampler = loader.sampler
    assert isinstance(sampler, ResumableSampler)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set ({len(sampler.dataset)} samples) is smaller than one batch per process "
            f"({loader.batch_size}); lower trainer.batch_size or enlarge the dataset"
        )
    epoch, offset = divmod(start_step, steps_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = offset * (loader.batch_size or 1)
        # The loader draws its worker seeds from its own generator, seeded per epoch, never from
        # the global RNG, so creating it on resume does not shift drop-path or augmentation streams.
        loader.generator.manual_seed(int(np.random.SeedSequence([sampler.seed, sampler.rank, epoch]).generate_state(1)[0]))
        yield from loader
        epoch, offset = epoch + 1, 0


def per_process_batch(total: int, world_size: int) -> int:
    """The configured batch is the total over all processes, split evenly (SPEC 5.1)."""
    if total % world_size:
        raise ValueError(f"trainer.batch_size={total} is not divisible by the {world_size} processes")
    return total // world_size


def wrap_distributed(model: nn.Module, info: DistInfo, find_unused_parameters: bool) -> nn.Module:
    """DDP around the model when several processes run; the bare model otherwise."""
    if not info.is_distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def train_loader(dataset: Dataset, info: DistInfo, trainer: DictConfig) -> DataLoader:
    """Shuffled, drop-last loader over this process's share of every epoch."""
    workers = int(trainer.num_workers)
    return DataLoader(
        dataset,
        batch_size=per_process_batch(int(trainer.batch_size), info.world_size),
        sampler=ResumableSampler(dataset, info, int(trainer.seed)),
        num_workers=workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,  # workers are re-seeded per epoch from the loader's generator
        generator=torch.Generator(),
    )


def resolve_resume(resume: Any, out_dir: Path) -> Path | None:
    """`false`: start fresh; `true`: this run folder's checkpoints/last.pt; a string: that file."""
    if resume is False or resume is None:
        return None
    if resume is True:
        return out_dir / "checkpoints" / "last.pt"
    return Path(str(resume))


def train_step(
    model: nn.Module,
    batch: dict[str, Any],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    autocast: Callable[[], Any],
    grad_clip: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward, weighted loss, backward, optimiser and schedule step; returns the detached losses."""
    with autocast():
        preds = model(batch["image"])
    preds = {t: p.float() for t, p in preds.items()}
    total, per_task = loss_fn(preds, batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return total.detach(), {t: v.detach() for t, v in per_task.items()}


def restore(path: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> int:
    """Load model, optimiser, schedule and RNG states from a checkpoint; returns its step."""
    payload = load_checkpoint(path)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    return int(payload["step"])


def checkpoint_payload(model: nn.Module, optimizer: Any, scheduler: Any, step: int, cfg: DictConfig) -> dict[str, Any]:
    """Everything needed to continue a run bit for bit."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": rng_state(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, dict[str, float]]:
    """Train and evaluate as `cfg` says; returns the final validation metrics."""
    info = init_distributed(str(cfg.trainer.device))
    try:
        return _run(cfg, Path(broadcast_from_main(str(out_dir))), info)
    finally:
        cleanup()


def _run(cfg: DictConfig, out_dir: Path, info: DistInfo) -> dict[str, dict[str, float]]:
    trainer = cfg.trainer
    tasks = list(cfg.tasks.names)
    num_classes = int(cfg.dataset.num_semseg_classes)
    seed_everything(int(trainer.seed))
    train_set = instantiate(cfg.dataset.train)
    val_set = instantiate(cfg.dataset.val)
    model = build_model(cfg).to(info.device)
    if info.is_distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = build_loss(cfg.tasks)
    optimizer = build_optimizer(cfg.optimizer, model, float(trainer.head_lr_mult))
    scheduler = build_poly_scheduler(optimizer, int(trainer.steps), float(trainer.poly_power))
    seed_everything(int(trainer.seed) + info.rank)  # per-process randomness (drop path, augmentation)
    resume_path = resolve_resume(trainer.resume, out_dir)
    start_step = 0 if resume_path is None else restore(resume_path, model, optimizer, scheduler)
    if resume_path is not None and info.is_main:
        log.info("resumed from %s at step %d", resume_path, start_step)
    net = maybe_compile(wrap_distributed(model, info, bool(trainer.find_unused_parameters)), cfg)  # trainer.compile
    loader = train_loader(train_set, info, trainer)
    val_loader = eval_loader(val_set, int(trainer.eval_batch_size), info.rank, info.world_size, int(trainer.num_workers))
    autocast = autocast_factory(str(trainer.precision), info.device)
    tracker = Tracker(out_dir, info.is_main)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tracker.log(start_step, {"model/parameters": total, "model/trainable_parameters": trainable})
    if info.is_main:
        log.info("model: %d parameters (%d trainable); %d processes on %s", total, trainable, info.world_size, info.device)
    steps = int(trainer.steps)
    stop_at = None if trainer.stop_at_step is None else int(trainer.stop_at_step)
    if info.is_main:
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    evaluate_now = partial(
        evaluate, loader=val_loader, tasks=tasks, num_semseg_classes=num_classes, device=info.device,
        loss_fn=loss_fn, autocast=autocast,
    )
    results: dict[str, dict[str, float]] = {}
    batches = batches_forever(loader, start_step)
    bar = tqdm(total=steps, initial=start_step, disable=not (info.is_main and cfg.logger.progress_bar), desc="train")
    images_seen, clock = 0, time.perf_counter()
    for step in range(start_step + 1, steps + 1):
        batch = to_device(next(batches), info.device)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
        loss, per_task = train_step(net, batch, loss_fn, optimizer, scheduler, autocast, trainer.grad_clip)
        images_seen += batch["image"].shape[0] * info.world_size
        if step % int(trainer.log_interval) == 0 or step == steps:
            elapsed = time.perf_counter() - clock
            throughput = images_seen / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{throughput:.2f}")
            record = {"train/loss": loss.item(), "train/lr": lr, "train/images_per_s": throughput}
            record.update({f"train/{t}/loss": v.item() for t, v in per_task.items()})
            tracker.log(step, record)
            images_seen, clock = 0, time.perf_counter()
        bar.update(1)
        stopping = step == stop_at
        if step % int(trainer.eval_interval) == 0 or step == steps:
            results = evaluate_now(net)
            tracker.log(step, flatten("val", results))
        if info.is_main and (step % int(trainer.eval_interval) == 0 or step == steps or stopping):
            save_atomic(checkpoint_payload(model, optimizer, scheduler, step, cfg), out_dir / "checkpoints" / "last.pt")
        if stopping:
            break
    bar.close()
    if stop_at is not None and stop_at < steps:
        if info.is_main:
            log.info("stopped at step %d of %d as trainer.stop_at_step asks; continue with trainer.resume=true", stop_at, steps)
        return results
    if not results:  # resumed at the end: nothing left to train, still report
        results = evaluate_now(net)
    reference = evaluate(
        ConstantPredictor.fit(train_set, tasks, num_classes).to(info.device),
        val_loader, tasks, num_classes, info.device, loss_fn=loss_fn,
    )
    if info.is_main:
        tracker.write_summary(results)
        tracker.write_summary(reference, "baseline_metrics.json")
        log.info("final validation metrics at step %d:\n%s", steps, format_table(results, reference))
    return results
