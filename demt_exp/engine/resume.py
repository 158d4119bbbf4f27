"""Continuing a run: which checkpoint, whether it belongs to this config, and restoring it exactly.

A checkpoint carries everything a bit-identical continuation needs: model, optimiser and
schedule states, the step, every rank's RNG states, the world size and the resolved config
(all tensors and plain values, so it loads with `weights_only=True`). Resuming under another
model, task set, world size or schedule is refused, naming the keys that differ, unless the
user lists them in `trainer.resume_allow_changes` (e.g. `[optimizer.lr]`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from demt_exp.config.stored import check_checkpoint_config
from demt_exp.engine.checkpoint import CheckpointFolder, load_checkpoint
from demt_exp.engine.rng import set_rng_state
from demt_exp.utils.errors import MissingFileError, UserError

log = logging.getLogger("demt_exp")

FORMAT = 2
# What must not change under a resumed run: the model, the tasks and their loss, the data it
# is trained on, and the schedule (optimiser, steps, batch, lr multipliers, seed).
IDENTITY_KEYS = (
    "backbone",
    "encoder",
    "decoder",
    "model.bottleneck_channels",
    "model.freeze_backbone",
    "tasks",
    "dataset.name",
    "dataset.num_semseg_classes",
    "dataset.image_size",
    "optimizer",
    "trainer.steps",
    "trainer.batch_size",
    "trainer.poly_power",
    "trainer.head_lr_mult",
    "trainer.seed",
    "trainer.grad_clip",
    "trainer.precision",
    "weighting",
)


class ResumeError(UserError, RuntimeError):
    """A checkpoint that cannot continue this run."""


def history_exists(out_dir: Path) -> bool:
    return (out_dir / "metrics.jsonl").is_file()


def resolve_resume(resume: Any, out_dir: Path, folder: CheckpointFolder) -> Path | None:
    """The checkpoint to continue from, or None to start fresh.

    `auto`: this run folder's last checkpoint when there is one (a requeued job finds its own);
    `true`: that checkpoint, which must exist; `false`: start fresh, and refuse a folder that
    already holds a run rather than append to it; a path: that file.
    """
    if resume == "auto":
        return folder.last if folder.last.is_file() else None
    if resume is True:
        if not folder.last.is_file():
            raise MissingFileError(
                f"checkpoint {folder.last} does not exist (trainer.resume=true continues the "
                f"checkpoint of this run folder; hydra.run.dir names the folder)"
            )
        return folder.last
    if resume is False:
        if folder.last.is_file() or history_exists(out_dir):
            raise ResumeError(
                f"run folder {out_dir} already holds a run; continue it with trainer.resume=true "
                f"(or auto), or choose another folder with hydra.run.dir=..."
            )
        return None
    return Path(str(resume))


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def differing_keys(saved: dict[str, Any], current: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Identity keys whose values differ: {dotted key: (checkpoint value, config value)}."""
    now = OmegaConf.to_container(current, resolve=True)
    diffs: dict[str, tuple[Any, Any]] = {}
    for root in IDENTITY_KEYS:
        old, new = _flat(_select(saved, root), root), _flat(_select(now, root), root)
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs[key] = (old.get(key), new.get(key))
    return diffs


def check_compatible(
    payload: dict[str, Any], cfg: DictConfig, world_size: int, path: Path
) -> dict[str, tuple[Any, Any]]:
    """Refuse a checkpoint of another model, task set, world size or schedule; returns the allowed changes."""
    allowed = [str(k) for k in (cfg.trainer.get("resume_allow_changes") or [])]
    diffs = differing_keys(payload.get("config") or {}, cfg)
    refused = {k: v for k, v in diffs.items() if not any(k == a or k.startswith(a + ".") for a in allowed)}
    saved_world = payload.get("world_size", world_size)
    if saved_world != world_size:
        refused["world_size"] = (saved_world, world_size)
    if refused:
        listing = "; ".join(f"{k}: checkpoint {old!r}, config {new!r}" for k, (old, new) in refused.items())
        raise ResumeError(
            f"checkpoint {path} belongs to another run: {listing}. Resume with the checkpoint's "
            f"values, start a new run folder, or allow a key with trainer.resume_allow_changes=[KEY]"
        )
    return {k: v for k, v in diffs.items() if k not in refused}


def build_payload(
    model: nn.Module,
    optimizer: Any | None,
    scheduler: Any,
    step: int,
    cfg: DictConfig,
    rng_states: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to continue a run bit for bit, as tensors and plain values. Without an `optimizer`
    (trainer.checkpoint.save_optimizer=false) the file is a third of the size and a resume is not exact."""
    state = {} if optimizer is None else {"optimizer": optimizer.state_dict()}
    return {
        "format": FORMAT,
        "model": model.state_dict(),
        **state,
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": rng_states,
        "world_size": len(rng_states),
        "config": OmegaConf.to_container(cfg, resolve=True),
        **extra,
    }


def rescale_learning_rate(optimizer: Any, scheduler: Any, ratio: float) -> None:
    """An allowed change of optimizer.lr: scale the schedule's base rates and the current rates."""
    scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio


def restore(
    path: Path,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    cfg: DictConfig,
    rank: int,
    world_size: int,
    trust: bool = False,
    modules: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into the live objects (this rank's RNG states included); returns the payload.

    `modules` are objects with state_dict/load_state_dict saved under their own payload key (the
    learned task weights under "weighting", the fp16 GradScaler under "grad_scaler"); a checkpoint
    written without one keeps that object's fresh state."""
    payload = load_checkpoint(path, trust=trust)
    # Only compared, never built; still refused like any stored config that names code this run does not
    check_checkpoint_config(payload.get("config") or {}, path, composed=cfg)
    changes = check_compatible(payload, cfg, world_size, path)
    model.load_state_dict(payload["model"])
    for key, module in (modules or {}).items():
        if key in payload:
            module.load_state_dict(payload[key])
    if "optimizer" in payload:
        optimizer.load_state_dict(payload["optimizer"])
    else:
        log.warning(
            "%s holds no optimizer state (written with trainer.checkpoint.save_optimizer=false): the optimizer "
            "starts afresh at step %s, so this continuation is not identical to an uninterrupted run",
            path,
            payload["step"],
        )
    scheduler.load_state_dict(payload["scheduler"])
    if "optimizer.lr" in changes:
        old, new = changes["optimizer.lr"]
        rescale_learning_rate(optimizer, scheduler, float(new) / float(old))
    if changes:
        log.warning(
            "resuming %s with changed %s", path, ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changes.items())
        )
    set_rng_state(payload["rng"][rank])  # the world size matched, so every rank has its own
    return payload
