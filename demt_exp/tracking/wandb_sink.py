"""Weights & Biases sink (optional extra `demt_exp[wandb]`): offline unless the user asks otherwise.

Every value goes under the same key as in `metrics.jsonl`, plotted against `trainer/step`
(a defined step metric, not W&B's own `_step`), so a resumed run that logs steps again after
its last checkpoint keeps them rather than having W&B drop them as out of order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STEP_KEY = "trainer/step"


def resolve_mode(mode: str | None) -> str:
    """`logger.wandb.mode`, else $WANDB_MODE, else offline: nothing needs a key or a network by default."""
    chosen = mode or os.environ.get("WANDB_MODE") or "offline"
    if chosen not in ("online", "offline", "disabled", "shared"):
        raise ValueError(f"logger.wandb.mode={chosen!r}; expected online, offline or disabled")
    return chosen


def import_wandb() -> Any:
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            "logger=wandb needs the wandb package: pip install 'demt_exp[wandb]' (or choose logger=jsonl)"
        ) from error
    return wandb


class WandbSink:
    """One W&B run; `run_id` continues an earlier one (resume="allow") so a requeued job adds to it."""

    def __init__(
        self, settings: Mapping[str, Any], config: dict[str, Any], out_dir: Path, run_id: str | None = None
    ) -> None:
        wandb = import_wandb()
        self._wandb = wandb
        directory = Path(settings.get("dir") or out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode=resolve_mode(settings.get("mode")),
            project=settings.get("project") or os.environ.get("WANDB_PROJECT") or "demt_exp",
            entity=settings.get("entity") or os.environ.get("WANDB_ENTITY"),
            group=settings.get("group"),
            name=settings.get("name"),
            tags=list(settings.get("tags") or []),
            job_type=settings.get("job_type") or "train",
            notes=settings.get("notes"),
            dir=str(directory),
            config=config,
            id=run_id,
            resume="allow",
            reinit="finish_previous",
        )
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    @property
    def run_id(self) -> str:
        return str(self.run.id)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log({**{k: v if isinstance(v, str) else float(v) for k, v in values.items()}, STEP_KEY: step})

    def log_images(self, step: int, key: str, images: Sequence[Any], captions: Sequence[str]) -> None:
        self.run.log({key: [self._wandb.Image(img, caption=c) for img, c in zip(images, captions)], STEP_KEY: step})

    def summary(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.run.summary[key] = float(value)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def flush_service() -> None:
    """Stop W&B's background service so every run file is complete on disk now: `run.finish()` can
    return before the service has written the run's records (an offline file read right after it
    may still be empty), and a job killed after training must not lose them."""
    import_wandb().teardown()
