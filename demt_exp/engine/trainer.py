"""The training run: plain PyTorch, iteration based, one process or DDP (torchrun, SLURM).

`run` owns the process (distributed set-up, signals, exit codes); `Trainer` owns one run: it builds
everything from the config, starts fresh or continues a checkpoint, then `fit` loops: a step
(`demt_exp.engine.step`), its log record, an evaluation every `eval_interval` steps and at the end, an
atomic checkpoint every `trainer.checkpoint.interval` steps (default: at each evaluation), at the
end and on a stop signal. Rank 0 alone logs and writes.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from demt_exp.config.checks import validate_config
from demt_exp.data.contract import check_dataset
from demt_exp.engine.chance import ConstantPredictor, wants_chance_reference
from demt_exp.engine.checkpoint import CheckpointFolder, remove_stale_temporaries
from demt_exp.engine.checkpoint_policy import BestMetric, params_finite, saves_optimizer, weights_checksum
from demt_exp.engine.compile import maybe_compile  # trainer.compile
from demt_exp.engine.cpu_allocator import apply_cpu_allocator
from demt_exp.engine.distributed import DistInfo, cleanup, init_distributed, wrap_distributed
from demt_exp.engine.evaluator import eval_loader, evaluate, to_device
from demt_exp.engine.loader import batches_forever, train_loader
from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
from demt_exp.engine.precision import autocast_factory, grad_scaler
from demt_exp.engine.resume import build_payload, resolve_resume, restore
from demt_exp.engine.rng import rng_state, seed_everything
from demt_exp.engine.signals import SignalWatch, StopRequested, requeue_or_exit
from demt_exp.engine.step import NonFiniteLoss, StepResult, train_step
from demt_exp.losses.task_losses import build_loss
from demt_exp.metrics.delta_m import delta_m_record
from demt_exp.models.init_setting import RANDOM, RANDOM_WARNING, describe_init, init_record
from demt_exp.models.linear import use_onednn_linears
from demt_exp.models.load_weights import apply_init
from demt_exp.models.model import build_model
from demt_exp.tracking import build_tracker, finish_open, flatten, format_table
from demt_exp.tracking.panels import validation_panels
from demt_exp.utils.collectives import all_reduce_sum_, broadcast_from_main, gather_objects
from demt_exp.weighting import build_weighting

log = logging.getLogger("demt_exp")

Results = dict[str, dict[str, float]]


def run(cfg: DictConfig, out_dir: str | Path) -> Results:
    """Train and evaluate as `cfg` says; returns the final validation metrics."""
    validate_config(cfg)
    info = init_distributed(str(cfg.trainer.device), float(cfg.trainer.dist_timeout_s))
    reuses = apply_cpu_allocator(str(cfg.trainer.cpu_allocator), info.device.type)  # before the first large tensor
    if reuses and info.is_main:
        log.info("trainer.cpu_allocator=reuse: freed CPU memory stays in the heap (demt_exp/engine/cpu_allocator.py)")
    if info.is_main and describe_init(cfg) == RANDOM:
        log.warning(RANDOM_WARNING)  # before anything is built, so nobody mistakes the run for the paper recipe
    watch = SignalWatch()
    stopped = False
    try:
        trainer = Trainer(cfg, Path(broadcast_from_main(str(out_dir))), info, watch)
        return trainer.fit(trainer.start())
    except StopRequested as stop:
        stopped = True
        previous = watch.previous.get(stop.signum)
        watch.close()
        cleanup()
        if info.is_main:
            log.info("%s", stop)
        requeue_or_exit(stop.signum, previous, info.is_main)
        raise
    finally:
        finish_open(stopped)
        watch.close()
        cleanup()


class Trainer:
    """One run: its parts built from the config (in a fixed order: the RNG streams a resume restores depend
    on it), the state a checkpoint carries (step, skipped steps, best metric), and the loop."""

    def __init__(self, cfg: DictConfig, out_dir: Path, info: DistInfo, watch: SignalWatch) -> None:
        self.cfg, self.out_dir, self.info, self.watch = cfg, out_dir, info, watch
        trainer = self.settings = cfg.trainer
        self.tasks = list(cfg.tasks.names)
        self.num_classes = int(cfg.dataset.num_semseg_classes)
        self.steps = int(trainer.steps)
        self.folder = CheckpointFolder(out_dir / "checkpoints", int(trainer.checkpoint.keep_last))
        self.resume_path = resolve_resume(trainer.resume, out_dir, self.folder)
        seed_everything(int(trainer.seed))
        self.train_set = check_dataset(instantiate(cfg.dataset.train), self.tasks, "train")
        self.val_set = check_dataset(instantiate(cfg.dataset.val), self.tasks, "val")
        self.model, self.init = self.build_model()
        self.loss_fn = build_loss(cfg.tasks)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, float(trainer.head_lr_mult))
        self.weighting = build_weighting(cfg.get("weighting"), self.tasks, self.loss_fn.weights).to(info.device)
        if (group := self.weighting.param_group(float(cfg.optimizer.lr))) is not None:
            self.optimizer.add_param_group(group)  # learned task weights: own group, no weight decay
        self.scheduler = build_poly_scheduler(self.optimizer, self.steps, float(trainer.poly_power))
        seed_everything(int(trainer.seed) + info.rank)  # per-process randomness (drop path)
        self.tracker = build_tracker(cfg, out_dir, info.is_main)
        self.best = BestMetric(trainer.checkpoint.best, str(trainer.checkpoint.best_mode))
        self.scaler = grad_scaler(str(trainer.precision), info.device, trainer.get("grad_scaler"))  # fp16 scaling
        self.skipped = 0
        self.autocast = autocast_factory(str(trainer.precision), info.device)
        self.val_loader = eval_loader(
            self.val_set, int(trainer.eval_batch_size), info.rank, info.world_size, int(trainer.num_workers)
        )

    def build_model(self) -> tuple[nn.Module, str]:
        """The model on its device, with the opt-in CPU linear route, `model.init` loaded (or recorded as random:
        returned as the second value), SyncBN under CUDA DDP."""
        model = build_model(self.cfg).to(self.info.device)
        if str(self.settings.get("cpu_linear", "blas")) == "onednn" and self.info.device.type == "cpu":
            swapped = use_onednn_linears(model)  # opt-in: faster on AVX-512 CPUs, slower without (models/linear.py)
            if self.info.is_main:
                log.info("trainer.cpu_linear=onednn: fp32 linear layers as oneDNN 1x1 convolutions (%d)", swapped)
        init = apply_init(model, self.cfg, warn=False)  # model.init, or init: random (warned in run())
        if self.info.is_distributed and self.info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, init

    def start(self) -> int:
        """Continue the checkpoint or start fresh, saying which; returns the step the run is at."""
        info, tracker, out_dir = self.info, self.tracker, self.out_dir
        start_step, wandb_run_id = 0, None
        if info.is_main:
            for stale in remove_stale_temporaries(self.folder.folder):
                log.info("removed %s, left by a save that did not finish", stale)
        if self.resume_path is not None:
            payload = restore(
                self.resume_path,
                self.model,
                self.optimizer,
                self.scheduler,
                self.cfg,
                info.rank,
                info.world_size,
                trust=bool(self.cfg.get("trust_checkpoints", False)),
                modules={"weighting": self.weighting, "grad_scaler": self.scaler},
            )
            start_step, self.skipped = int(payload["step"]), int(payload.get("skipped_steps", 0))
            self.best.value, wandb_run_id = payload.get("best_value"), payload.get("wandb_run_id")
            if info.is_main:
                dropped = tracker.truncate_after(start_step)
                note = f"; dropped {dropped} history records of later steps" if dropped else ""
                log.info("continuing %s from step %d (%s)%s", out_dir, start_step, self.resume_path, note)
        elif info.is_main:
            log.info("starting %s fresh", out_dir)
            if tracker.truncate_after(-1):  # history never holds a step twice
                log.warning("%s held the history of a run that wrote no checkpoint; starting it again", out_dir)
        tracker.start(wandb_run_id)  # a resumed run continues its W&B run
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if start_step == 0:
            record = {"model/parameters": total, "model/trainable_parameters": trainable}
            tracker.log(0, {**record, "dist/world_size": info.world_size, **init_record(self.init)})
        if info.is_main:
            log.info(
                "model: %d parameters (%d trainable); %d processes on %s",
                total,
                trainable,
                info.world_size,
                info.device,
            )
            OmegaConf.save(self.cfg, out_dir / "config.yaml", resolve=True)
        return start_step

    def fit(self, start_step: int) -> Results:
        """The loop, from `start_step` to `trainer.steps` (or `trainer.stop_at_step`), then the final report."""
        trainer, info = self.settings, self.info
        stop_at = trainer.stop_at_step  # ends a process that reaches it; a run continued from there trains on
        stop_at = None if stop_at is None or start_step >= int(stop_at) else int(stop_at)
        eval_every = int(trainer.eval_interval)
        save_every = int(trainer.checkpoint.interval or eval_every)
        net = maybe_compile(wrap_distributed(self.model, info, bool(trainer.find_unused_parameters)), self.cfg)
        batches = batches_forever(train_loader(self.train_set, info, trainer), start_step)
        shown = info.is_main and self.cfg.logger.progress_bar
        bar = tqdm(total=self.steps, initial=start_step, disable=not shown, desc="train")
        results: Results = {}
        images, clock, step = 0, time.perf_counter(), start_step
        for step in range(start_step + 1, self.steps + 1):
            batch = to_device(next(batches), info.device)
            lrs = {f"train/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
            outcome = train_step(
                net,
                batch,
                self.loss_fn,
                self.optimizer,
                self.scheduler,
                self.autocast,
                trainer.grad_clip,
                self.watch,
                self.weighting,
                self.scaler,
            )
            self.count_nonfinite(step, outcome)
            images += batch["image"].shape[0] * info.world_size
            if step % int(trainer.log_interval) == 0 or step == self.steps:
                throughput = images / max(time.perf_counter() - clock, 1e-9)
                bar.set_postfix(self.log_step(step, outcome, {"train/lr": lr, **lrs}, throughput))
                images, clock = 0, time.perf_counter()
            bar.update(1)
            is_best = False
            if step % eval_every == 0 or step == self.steps:
                results = self.evaluate(net, final=step == self.steps)
                self.tracker.log(step, flatten("val", results))
                panels = partial(validation_panels, self.model, self.val_set, self.tasks, info.device)
                self.tracker.log_images(step, "val/panels", panels)
                is_best = self.best.improved(results)
            if step % save_every == 0 or step == self.steps or step == stop_at or outcome.signal or is_best:
                self.save(step, is_best)
            if outcome.signal:
                self.tracker.log(step, {"stop/signal": outcome.signal})
                bar.close()
                raise StopRequested(
                    outcome.signal, step, self.out_dir, self.folder.last if self.folder.keep_last else None
                )
            if step == stop_at:
                break
        bar.close()
        return self.finish(step, results, net)

    def count_nonfinite(self, step: int, outcome: StepResult) -> None:
        """A step a non-finite loss kept from the weights: stop the run (default) or count it as skipped."""
        if not outcome.nonfinite:
            return
        if self.settings.nonfinite == "stop":
            raise NonFiniteLoss(
                f"non-finite loss at step {step} in task(s) {', '.join(outcome.nonfinite)}; the step was not "
                f"applied and the last checkpoint ({self.folder.last}) is untouched. Lower optimizer.lr, set "
                f"trainer.grad_clip, or pass trainer.nonfinite=skip to skip such steps"
            )
        self.skipped += 1
        log.warning("skipped step %d: non-finite loss in %s (%d skipped so far)", step, outcome.nonfinite, self.skipped)

    def log_step(self, step: int, outcome: StepResult, lrs: dict[str, float], throughput: float) -> dict[str, str]:
        """The step's record (losses averaged over all ranks, not rank 0's share alone); returns the bar's text."""
        losses = torch.stack([outcome.loss, *outcome.per_task.values()]).double()
        all_reduce_sum_(losses)
        losses /= self.info.world_size
        record = {"train/loss": losses[0].item(), **lrs, "train/images_per_s": throughput}
        record["train/skipped_steps"] = self.skipped
        record.update({f"train/{t}/loss": v.item() for t, v in zip(outcome.per_task, losses[1:])})
        record.update({f"train/weight/{t}": w for t, w in self.weighting.weights().items()})
        if self.scaler.is_enabled():
            record["train/loss_scale"] = self.scaler.get_scale()
        self.tracker.log(step, record)
        return {"loss": f"{losses[0].item():.4f}", "img_s": f"{throughput:.2f}"}

    def evaluate(self, net: nn.Module, final: bool) -> Results:
        """Validation metrics (and Delta_m against the configured references)."""
        results = evaluate(
            net,
            self.val_loader,
            self.tasks,
            self.num_classes,
            self.info.device,
            loss_fn=self.loss_fn,
            autocast=self.autocast,
        )
        multi_task, _ = delta_m_record(self.cfg, results, verbose=self.info.is_main and final)
        if multi_task:
            results["multi_task"] = multi_task
        return results

    def save(self, step: int, is_best: bool) -> None:
        """Every rank takes part (their RNG states are gathered); rank 0 writes. keep_last=0 writes best.pt only."""
        if not (self.folder.keep_last or is_best):
            return
        gathered = gather_objects((rng_state(), weights_checksum(self.model)))
        if len({checksum for _, checksum in gathered}) != 1:
            raise RuntimeError(f"the ranks hold different weights at step {step}: {[c for _, c in gathered]}")
        if not params_finite(self.model):
            raise NonFiniteLoss(f"the weights are not finite at step {step}; the checkpoint of an earlier step is kept")
        if not self.info.is_main:
            return
        extra: dict[str, Any] = {"skipped_steps": self.skipped, "best_metric": self.best.metric}
        extra.update(
            best_value=self.best.value, wandb_run_id=self.tracker.run_id, weighting=self.weighting.state_dict()
        )
        if self.scaler.is_enabled():
            extra["grad_scaler"] = self.scaler.state_dict()  # the scale and its growth count: resume stays exact
        keeps = saves_optimizer(self.settings.checkpoint.get("save_optimizer", True), str(self.cfg.dataset.name))
        states = [state for state, _ in gathered]
        payload = build_payload(
            self.model, self.optimizer if keeps else None, self.scheduler, step, self.cfg, states, extra
        )
        self.folder.save(payload, step, best=is_best)

    def finish(self, step: int, results: Results, net: nn.Module) -> Results:
        """After the loop: a stop before the last step says so; at the last step the final metrics, the chance
        level (synthetic demo), metrics.json and the table, also for a run that had nothing left to train."""
        info, out_dir = self.info, self.out_dir
        if step < self.steps:
            if info.is_main:
                log.info(
                    "stopped at step %d of %d as trainer.stop_at_step asks; the same command continues %s to step %d",
                    step,
                    self.steps,
                    out_dir,
                    self.steps,
                )
            return results
        if not results:
            if info.is_main:
                log.info(
                    "nothing left to train: %s is at its last step (%d); evaluating its checkpoint", out_dir, self.steps
                )
            results = self.evaluate(net, final=True)
        reference: Results = {}
        if wants_chance_reference(self.settings.get("chance_reference", "auto"), str(self.cfg.dataset.name)):
            chance = ConstantPredictor.fit(self.train_set, self.tasks, self.num_classes, seed=int(self.settings.seed))
            reference = evaluate(
                chance.to(info.device), self.val_loader, self.tasks, self.num_classes, info.device, loss_fn=self.loss_fn
            )
        if info.is_main:
            self.tracker.write_summary(results)
            if reference:
                self.tracker.write_summary(reference, "baseline_metrics.json")
            log.info("final validation metrics at step %d:\n%s", self.steps, format_table(results, reference))
        self.tracker.finish()
        return results
