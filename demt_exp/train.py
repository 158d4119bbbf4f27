"""The training loop: plain PyTorch, iteration based, one process or DDP (torchrun, SLURM).

One step: next batch -> forward (optionally autocast) -> weighted multi-task loss -> one
collective that agrees on finiteness and stop signals -> backward -> optimiser step -> poly
lr step. Evaluation every `eval_interval` steps and at the end; an atomic checkpoint every
`trainer.checkpoint.interval` steps (default: at each evaluation), at the end and on a stop
signal; rank 0 alone logs and writes. A non-finite loss stops the run (or skips the step)
before it can reach the weights, so the last good checkpoint always stays good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from demt_exp.baseline import ConstantPredictor
from demt_exp.checkpoint import CheckpointFolder, remove_stale_temporaries
from demt_exp.compile import maybe_compile  # trainer.compile
from demt_exp.cpu_allocator import apply_cpu_allocator
from demt_exp.distributed import (
    DistInfo,
    all_reduce_sum_,
    broadcast_from_main,
    cleanup,
    gather_objects,
    init_distributed,
)
from demt_exp.evaluator import eval_loader, evaluate, to_device
from demt_exp.losses import weighted_sum
from demt_exp.metrics.delta_m import delta_m_record
from demt_exp.metrics.direction import lower_is_better
from demt_exp.models.init import apply_init
from demt_exp.models.init_setting import (
    RANDOM,
    RANDOM_WARNING,
    describe_init,
    init_record,
)
from demt_exp.models.linear import use_onednn_linears
from demt_exp.models.model import build_model
from demt_exp.optim import build_optimizer, build_poly_scheduler
from demt_exp.precision import autocast_factory, grad_scaler, no_scaling, optimizer_step
from demt_exp.resume import build_payload, resolve_resume, restore
from demt_exp.rng import rng_state, seed_everything
from demt_exp.sampling import EpochSampler, SeededSamples, batches_forever
from demt_exp.signals import (
    SignalWatch,
    StopRequested,
    ignore_interrupt,
    requeue_or_exit,
)
from demt_exp.tracking import build_tracker, finish_open, flatten, format_table
from demt_exp.tracking.panels import validation_panels
from demt_exp.validate import validate_config
from demt_exp.weighting import FixedWeighting, LossWeighting, build_weighting

log = logging.getLogger("demt_exp")

__all__ = ["autocast_factory", "batches_forever", "build_loss", "run", "seed_everything", "train_loader", "train_step"]


class NonFiniteLoss(FloatingPointError):
    """A task's loss went NaN or infinite; raised before the step can reach the weights."""


def wants_chance_reference(setting: Any, dataset: str) -> bool:
    """`trainer.chance_reference`: true, false, or auto (only the synthetic demo: a real run should not pay for it)."""
    if setting == "auto":
        return dataset == "synthetic"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"trainer.chance_reference={setting!r}; expected auto, true or false")


def saves_optimizer(setting: Any, dataset: str) -> bool:
    """`trainer.checkpoint.save_optimizer`: true (exact resume), false (weights only, a third of the size), or
    auto (false only for the synthetic demo, whose tries should not each write the optimiser state)."""
    if setting == "auto":
        return dataset != "synthetic"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"trainer.checkpoint.save_optimizer={setting!r}; expected auto, true or false")


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
    """Shuffled, drop-last loader over this process's share of every epoch, each sample seeded
    from (seed, epoch, index), so workers can persist and their number does not matter."""
    workers = int(trainer.num_workers)
    seed = int(trainer.seed)
    return DataLoader(
        SeededSamples(dataset, seed),
        batch_size=per_process_batch(int(trainer.batch_size), info.world_size),
        sampler=EpochSampler(dataset, info.rank, info.world_size, seed),
        num_workers=workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=ignore_interrupt,
        generator=torch.Generator(),  # worker base seeds come from here, never from the global RNG
    )


@dataclass
class StepResult:
    loss: torch.Tensor
    per_task: dict[str, torch.Tensor]
    nonfinite: list[str]  # tasks whose loss was not finite on some rank; the step was not applied
    signal: int  # a stop signal any rank received before this step's agreement, else 0
    overflow: bool = False  # fp16: the scaled gradients overflowed, the scaler skipped the step (not a non-finite loss)


def agree(
    per_task: Mapping[str, torch.Tensor], watch: SignalWatch | None, device: torch.device
) -> tuple[list[str], int]:
    """One collective per step: which task losses are finite on every rank, and any stop signal."""
    flags = torch.stack([torch.isfinite(v.detach()).all().double() for v in per_task.values()])
    flags = torch.cat(
        [flags, torch.tensor([-float(watch.received if watch else 0)], dtype=torch.float64, device=flags.device)]
    ).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
    nonfinite = [t for t, ok in zip(per_task, flags[:-1].tolist()) if ok < 1]
    return nonfinite, int(-flags[-1].item())


def train_step(
    model: nn.Module,
    batch: dict[str, Any],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    autocast: Callable[[], Any],
    grad_clip: float | None,
    watch: SignalWatch | None = None,
    weighting: LossWeighting | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Forward, per-task losses, agreement, weighted backward, optimiser and schedule step.

    `weighting` (default: the fixed official weights) leaves the step's gradients in `.grad`;
    one that combines per-task gradients itself runs under DDP's no_sync() and reduces them once.
    A step whose loss is not finite on some rank is not applied on any rank (all ranks know it
    from the same collective); the schedule still advances with the step count. `scaler` (fp16)
    scales the loss before backward and skips a step whose scaled gradients overflowed."""
    if weighting is None:
        weighting = FixedWeighting(list(loss_fn.weights), loss_fn.weights)
    scaler = no_scaling() if scaler is None else scaler
    overflow = False
    manual = weighting.manual_sync and isinstance(model, DistributedDataParallel)
    with model.no_sync() if manual else nullcontext():
        with autocast():
            preds = model(batch["image"])
        preds = {t: p.float() for t, p in preds.items()}
        losses = loss_fn.task_losses(preds, batch)
        per_task = {t: v.detach() for t, v in losses.items()}
        nonfinite, signum = agree(per_task, watch, batch["image"].device)
        optimizer.zero_grad(set_to_none=True)
        weighting.zero_grad(set_to_none=True)
        if nonfinite:
            total = weighted_sum(loss_fn.weights, per_task)
            if isinstance(model, DistributedDataParallel) and not manual:
                # DDP expects each forward's gradient reduction to finish; these gradients are dropped
                (weighted_sum(loss_fn.weights, losses) * 0).backward()
                optimizer.zero_grad(set_to_none=True)
        else:
            total = weighting.backward(losses, model, scale=scaler.scale)
            overflow = not optimizer_step(scaler, optimizer, model.parameters(), grad_clip)
            weighting.after_step()
    scheduler.step()
    return StepResult(total.detach(), per_task, nonfinite, signum, overflow)


class BestMetric:
    """The best value of `trainer.checkpoint.best` seen so far, in its direction."""

    def __init__(self, metric: str | None, mode: str, value: float | None = None) -> None:
        self.metric = metric
        self.lower = (lower_is_better(metric) if mode == "auto" else mode == "min") if metric else False
        self.value = value

    def improved(self, results: Mapping[str, Mapping[str, float]]) -> bool:
        if not self.metric or not results:
            return False
        task, name = self.metric.split("/", 1)
        if name not in results.get(task, {}):
            raise KeyError(
                f"trainer.checkpoint.best={self.metric!r}: evaluation gives {sorted(results[task])} for {task}"
            )
        value = float(results[task][name])
        better = self.value is None or (value < self.value if self.lower else value > self.value)
        if better:
            self.value = value
        return better


def params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def weights_checksum(model: nn.Module) -> tuple[float, float]:
    """Sum and sum of squares of all parameters (float64): equal on ranks holding equal weights."""
    total = torch.zeros(2, dtype=torch.float64)
    for p in model.parameters():
        values = p.detach().double().cpu()
        total += torch.stack([values.sum(), values.square().sum()])
    return float(total[0]), float(total[1])


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, dict[str, float]]:
    """Train and evaluate as `cfg` says; returns the final validation metrics."""
    validate_config(cfg)
    info = init_distributed(str(cfg.trainer.device), float(cfg.trainer.dist_timeout_s))
    reuses = apply_cpu_allocator(str(cfg.trainer.cpu_allocator), info.device.type)  # before the first large tensor
    if reuses and info.is_main:
        log.info("trainer.cpu_allocator=reuse: freed CPU memory stays in the heap (demt_exp/cpu_allocator.py)")
    if info.is_main and describe_init(cfg) == RANDOM:
        log.warning(RANDOM_WARNING)  # before anything is built, so nobody mistakes the run for the paper recipe
    watch = SignalWatch()
    try:
        return _run(cfg, Path(broadcast_from_main(str(out_dir))), info, watch)
    except StopRequested as stop:
        previous = watch.previous.get(stop.signum)
        watch.close()
        cleanup()
        if info.is_main:
            log.info("%s", stop)
        requeue_or_exit(stop.signum, previous, info.is_main)
        raise
    finally:
        finish_open()
        watch.close()
        cleanup()


def _run(cfg: DictConfig, out_dir: Path, info: DistInfo, watch: SignalWatch) -> dict[str, dict[str, float]]:
    trainer = cfg.trainer
    tasks = list(cfg.tasks.names)
    num_classes = int(cfg.dataset.num_semseg_classes)
    folder = CheckpointFolder(out_dir / "checkpoints", int(trainer.checkpoint.keep_last))
    resume_path = resolve_resume(trainer.resume, out_dir, folder)
    seed_everything(int(trainer.seed))
    train_set = instantiate(cfg.dataset.train)
    val_set = instantiate(cfg.dataset.val)
    model = build_model(cfg).to(info.device)
    if str(trainer.get("cpu_linear", "blas")) == "onednn" and info.device.type == "cpu":
        swapped = use_onednn_linears(model)  # opt-in: faster on AVX-512 CPUs, slower without (models/linear.py)
        if info.is_main:
            log.info("trainer.cpu_linear=onednn: fp32 linear layers as oneDNN 1x1 convolutions (%d nn.Linear)", swapped)
    init = apply_init(model, cfg, warn=False)  # load model.init, or record init: random (warned in run())
    if info.is_distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = build_loss(cfg.tasks)
    optimizer = build_optimizer(cfg.optimizer, model, float(trainer.head_lr_mult))
    weighting = build_weighting(cfg.get("weighting"), tasks, loss_fn.weights).to(info.device)
    if (group := weighting.param_group(float(cfg.optimizer.lr))) is not None:
        optimizer.add_param_group(group)  # learned task weights: own group, no weight decay
    scheduler = build_poly_scheduler(optimizer, int(trainer.steps), float(trainer.poly_power))
    seed_everything(int(trainer.seed) + info.rank)  # per-process randomness (drop path)
    tracker = build_tracker(cfg, out_dir, info.is_main)
    best = BestMetric(trainer.checkpoint.best, str(trainer.checkpoint.best_mode))
    scaler = grad_scaler(str(trainer.precision), info.device, trainer.get("grad_scaler"))  # fp16 loss scaling
    start_step, skipped, wandb_run_id = 0, 0, None
    if info.is_main:
        for stale in remove_stale_temporaries(folder.folder):
            log.info("removed %s, left by a save that did not finish", stale)
    if resume_path is not None:
        payload = restore(
            resume_path,
            model,
            optimizer,
            scheduler,
            cfg,
            info.rank,
            info.world_size,
            trust=bool(cfg.get("trust_checkpoints", False)),
            modules={"weighting": weighting, "grad_scaler": scaler},
        )
        start_step, skipped = int(payload["step"]), int(payload.get("skipped_steps", 0))
        best.value = payload.get("best_value")
        wandb_run_id = payload.get("wandb_run_id")
        if info.is_main:
            dropped = tracker.truncate_after(start_step)
            log.info(
                "continuing %s from step %d (%s)%s",
                out_dir,
                start_step,
                resume_path,
                f"; dropped {dropped} history records of later steps" if dropped else "",
            )
    elif info.is_main:
        log.info("starting %s fresh", out_dir)
        if tracker.truncate_after(-1):  # history never holds a step twice
            log.warning("%s held the history of a run that wrote no checkpoint; starting it again", out_dir)
    tracker.start(wandb_run_id)  # a resumed run continues its W&B run
    net = maybe_compile(wrap_distributed(model, info, bool(trainer.find_unused_parameters)), cfg)  # trainer.compile
    loader = train_loader(train_set, info, trainer)
    val_loader = eval_loader(
        val_set, int(trainer.eval_batch_size), info.rank, info.world_size, int(trainer.num_workers)
    )
    autocast = autocast_factory(str(trainer.precision), info.device)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if start_step == 0:
        tracker.log(
            0,
            {
                "model/parameters": total,
                "model/trainable_parameters": trainable,
                "dist/world_size": info.world_size,
                **init_record(init),
            },
        )
    if info.is_main:
        log.info(
            "model: %d parameters (%d trainable); %d processes on %s", total, trainable, info.world_size, info.device
        )
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    steps = int(trainer.steps)
    # stop_at_step ends a process that reaches it; a run continued from there (or beyond) trains on to `steps`
    stop_at = (
        None if trainer.stop_at_step is None or start_step >= int(trainer.stop_at_step) else int(trainer.stop_at_step)
    )
    eval_every = int(trainer.eval_interval)
    save_every = int(trainer.checkpoint.interval or eval_every)
    evaluate_now = partial(
        evaluate,
        loader=val_loader,
        tasks=tasks,
        num_semseg_classes=num_classes,
        device=info.device,
        loss_fn=loss_fn,
        autocast=autocast,
    )

    def save(step: int, is_best: bool) -> None:
        """Every rank takes part (their RNG states are gathered); rank 0 writes. keep_last=0 writes best.pt only."""
        if not (folder.keep_last or is_best):
            return
        gathered = gather_objects((rng_state(), weights_checksum(model)))
        states = [state for state, _ in gathered]
        if len({checksum for _, checksum in gathered}) != 1:
            raise RuntimeError(f"the ranks hold different weights at step {step}: {[c for _, c in gathered]}")
        if not params_finite(model):
            raise NonFiniteLoss(f"the weights are not finite at step {step}; the checkpoint of an earlier step is kept")
        if info.is_main:
            extra = {
                "skipped_steps": skipped,
                "best_metric": best.metric,
                "best_value": best.value,
                "wandb_run_id": tracker.run_id,
                "weighting": weighting.state_dict(),
            }
            if scaler.is_enabled():
                extra["grad_scaler"] = scaler.state_dict()  # the scale and its growth count: resume stays exact
            kept = (
                optimizer
                if saves_optimizer(trainer.checkpoint.get("save_optimizer", True), str(cfg.dataset.name))
                else None
            )
            folder.save(build_payload(model, kept, scheduler, step, cfg, states, extra), step, best=is_best)

    results: dict[str, dict[str, float]] = {}
    batches = batches_forever(loader, start_step)
    bar = tqdm(total=steps, initial=start_step, disable=not (info.is_main and cfg.logger.progress_bar), desc="train")
    images_seen, clock = 0, time.perf_counter()
    step = start_step
    for step in range(start_step + 1, steps + 1):
        batch = to_device(next(batches), info.device)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
        group_lrs = {f"train/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
        outcome = train_step(
            net, batch, loss_fn, optimizer, scheduler, autocast, trainer.grad_clip, watch, weighting, scaler
        )
        if outcome.nonfinite:
            if trainer.nonfinite == "stop":
                raise NonFiniteLoss(
                    f"non-finite loss at step {step} in task(s) {', '.join(outcome.nonfinite)}; the step was not "
                    f"applied and the last checkpoint ({folder.last}) is untouched. Lower optimizer.lr, set "
                    f"trainer.grad_clip, or pass trainer.nonfinite=skip to skip such steps"
                )
            skipped += 1
            log.warning("skipped step %d: non-finite loss in %s (%d skipped so far)", step, outcome.nonfinite, skipped)
        images_seen += batch["image"].shape[0] * info.world_size
        if step % int(trainer.log_interval) == 0 or step == steps:
            losses = torch.stack([outcome.loss, *outcome.per_task.values()]).double()
            all_reduce_sum_(losses)  # the mean over all ranks, not rank 0's half-batch alone
            losses /= info.world_size
            elapsed = time.perf_counter() - clock
            throughput = images_seen / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{losses[0].item():.4f}", img_s=f"{throughput:.2f}")
            record = {
                "train/loss": losses[0].item(),
                "train/lr": lr,
                "train/images_per_s": throughput,
                "train/skipped_steps": skipped,
                **group_lrs,
            }
            record.update({f"train/{t}/loss": v.item() for t, v in zip(outcome.per_task, losses[1:])})
            record.update({f"train/weight/{t}": w for t, w in weighting.weights().items()})
            if scaler.is_enabled():
                record["train/loss_scale"] = scaler.get_scale()
            tracker.log(step, record)
            images_seen, clock = 0, time.perf_counter()
        bar.update(1)
        is_best = False
        if step % eval_every == 0 or step == steps:
            results = evaluate_now(net)
            multi_task, _ = delta_m_record(cfg, results, verbose=info.is_main and step == steps)
            if multi_task:
                results["multi_task"] = multi_task
            tracker.log(step, flatten("val", results))
            tracker.log_images(step, "val/panels", partial(validation_panels, model, val_set, tasks, info.device))
            is_best = best.improved(results)
        stopping = step == stop_at or bool(outcome.signal)
        if step % save_every == 0 or step == steps or stopping or is_best:
            save(step, is_best)
        if outcome.signal:
            tracker.log(step, {"stop/signal": outcome.signal})
            bar.close()
            raise StopRequested(outcome.signal, step, out_dir, folder.last if folder.keep_last else None)
        if step == stop_at:
            break
    bar.close()
    if step < steps:
        if info.is_main:
            log.info(
                "stopped at step %d of %d as trainer.stop_at_step asks; the same command continues %s to step %d",
                step,
                steps,
                out_dir,
                steps,
            )
        return results
    if not results:  # resumed at the end: nothing left to train, still report
        if info.is_main:
            log.info("nothing left to train: %s is at its last step (%d); evaluating its checkpoint", out_dir, steps)
        results = evaluate_now(net)
    reference: dict[str, dict[str, float]] = {}
    if wants_chance_reference(trainer.get("chance_reference", "auto"), str(cfg.dataset.name)):
        reference = evaluate(
            ConstantPredictor.fit(train_set, tasks, num_classes, seed=int(trainer.seed)).to(info.device),
            val_loader,
            tasks,
            num_classes,
            info.device,
            loss_fn=loss_fn,
        )
    if info.is_main:
        tracker.write_summary(results)
        if reference:
            tracker.write_summary(reference, "baseline_metrics.json")
        log.info("final validation metrics at step %d:\n%s", steps, format_table(results, reference))
    tracker.finish()
    return results
