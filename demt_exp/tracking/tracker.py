"""The one object the training loop logs through: `tracker.log(step, record)` reaches every sink.

Sinks: the JSON-lines history (`logger.history`, on for `logger=jsonl|wandb`) and W&B
(`logger.wandb`, set by `logger=wandb`). `metrics.json` is written whatever the logger, since it
is the run's result. Off the main process every call does nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from demt_exp.tracking.jsonl import JsonlHistory
from demt_exp.tracking.records import Nested
from demt_exp.tracking.run_identity import hydra_group_and_name

log = logging.getLogger("demt_exp")
_OPEN: list[Tracker] = []


class Tracker:
    """JSON-lines history, optional W&B run, final `metrics.json`; silent off the main process."""

    def __init__(
        self,
        out_dir: str | Path,
        enabled: bool,
        history: bool = True,
        wandb_settings: Mapping[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        history_name: str = "metrics.jsonl",
    ) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.history_path = self.out_dir / history_name
        self.history = JsonlHistory(self.history_path) if enabled and history else None
        self.wandb_settings = dict(wandb_settings) if enabled and wandb_settings else None
        self.config = config or {}
        self.wandb: Any = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def start(self, run_id: str | None = None) -> None:
        """Open the W&B run (if configured), continuing `run_id` when a checkpoint names one."""
        if self.wandb_settings is None or self.wandb is not None:
            return
        from demt_exp.tracking.wandb_sink import WandbSink

        self.wandb = WandbSink(self.wandb_settings, self.config, self.out_dir, run_id)
        _OPEN.append(self)
        log.info("W&B run %s (%s) in %s", self.wandb.run_id, self.wandb.run.settings.mode, self.wandb.run.dir)

    @property
    def run_id(self) -> str | None:
        """The W&B run id, stored in checkpoints so a resumed job continues the same run."""
        return self.wandb.run_id if self.wandb is not None else None

    @property
    def wants_images(self) -> bool:
        return self.wandb is not None and int(self.wandb_settings.get("panels", 0)) > 0

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """One record {"step": step, **values} to every sink."""
        if not self.enabled:
            return
        if self.history is not None:
            self.history.log(step, values)
        if self.wandb is not None:
            self.wandb.log(step, values)

    def log_images(self, step: int, key: str, make: Callable[[int], Sequence[tuple[str, Any]]]) -> None:
        """Images from `make(count)` ([(caption, PIL image or HxWx3 array)]), built only when a sink shows them."""
        if not (self.enabled and self.wants_images):
            return
        captioned = make(int(self.wandb_settings["panels"]))
        self.wandb.log_images(step, key, [img for _, img in captioned], [c for c, _ in captioned])

    def truncate_after(self, step: int) -> int:
        """Drop the history records of steps after `step` (a killed run's, about to be logged again)."""
        return self.history.truncate_after(step) if self.history is not None else 0

    def write_summary(self, metrics: Nested, name: str = "metrics.json") -> Path | None:
        """Final metrics per task as {task: {metric: value}} (written by every logger)."""
        if not self.enabled:
            return None
        path = self.out_dir / name
        path.write_text(json.dumps({t: dict(v) for t, v in metrics.items()}, indent=2, sort_keys=True) + "\n")
        return path

    def finish(self, exit_code: int = 0) -> None:
        had_wandb = self.wandb is not None
        if had_wandb:
            self.wandb.finish(exit_code)
            self.wandb = None
        if self in _OPEN:
            _OPEN.remove(self)
        if had_wandb and not any(t.wandb is not None for t in _OPEN):
            from demt_exp.tracking.wandb_sink import flush_service

            flush_service()


def build_tracker(cfg: DictConfig, out_dir: str | Path, is_main: bool) -> Tracker:
    """The tracker `cfg.logger` asks for; the W&B run opens later with `start()` (after resume)."""
    logger = cfg.logger
    settings = OmegaConf.to_container(logger.wandb, resolve=True) if logger.get("wandb") else None
    config = None
    if settings is not None and is_main:
        group, name = hydra_group_and_name()
        settings["group"] = settings.get("group") or group
        settings["name"] = settings.get("name") or name or Path(out_dir).name
        config = OmegaConf.to_container(cfg, resolve=True)
    return Tracker(out_dir, is_main, history=bool(logger.get("history", True)), wandb_settings=settings, config=config)


def finish_open(stopped: bool = False) -> None:
    """Close W&B runs a failed or stopped run left open: a signalled stop (`stopped`: checkpoint written, job
    requeued) is marked preempting, so W&B waits for the job to continue it; an exception in flight fails it."""
    error = sys.exc_info()[1]
    for tracker in list(_OPEN):
        if stopped and tracker.wandb is not None:
            tracker.wandb.run.mark_preempting()
        tracker.finish(0 if stopped or error is None else 1)
