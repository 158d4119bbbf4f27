"""Config checks that run before anything is built, each naming the key and what it accepts.

A mistake found here costs a second; found 40k steps into a cluster job (an `eval_interval`
of 0, a negative clip that turns descent into ascent) it costs the job.
"""

from __future__ import annotations

import copy
from numbers import Real
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from demt_exp.config.objective import check_objective
from demt_exp.tasks.registry import define_tasks, known_tasks
from demt_exp.utils.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
SCALER_ENABLED = ("auto", True, False)  # trainer.grad_scaler.enabled
CPU_LINEAR_ROUTES = ("blas", "onednn")  # trainer.cpu_linear
CPU_ALLOCATOR_MODES = ("reuse", "system")  # trainer.cpu_allocator
NONFINITE_POLICIES = ("stop", "skip")


def _number(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{key}={value!r}; expected a number")
    return value


def _integer_at_least(cfg: DictConfig, key: str, low: int, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        allowed = f"an integer >= {low}" + (" or null" if optional else "")
        raise ConfigError(f"{key}={value!r}; expected {allowed}")


def _positive(cfg: DictConfig, key: str, optional: bool = False) -> None:
    if optional and OmegaConf.select(cfg, key) is None:
        return
    value = _number(cfg, key)
    if not value > 0:
        raise ConfigError(f"{key}={value!r}; expected a number > 0" + (" or null" if optional else ""))


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str | bool, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        names = (str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)  # as YAML spells true/false
        raise ConfigError(f"{key}={value!r}; expected one of {', '.join(names)}")


def check_tasks(cfg: DictConfig) -> None:
    """Define the config's own tasks (`tasks.define`), then check `tasks.names` against every known task."""
    define_tasks(cfg)
    names = OmegaConf.select(cfg, "tasks.names")
    known = ", ".join(known_tasks())
    if not names:
        raise ConfigError(f"tasks.names={names!r}; expected a non-empty list of tasks from {known}")
    unknown = [t for t in names if t not in known_tasks()]
    if unknown:
        raise ConfigError(
            f"tasks.names has unknown tasks {unknown}; expected tasks from {known} "
            "(a task of your own: tasks.define.<name>, docs/extending.md)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks.names={list(names)} names a task twice")


def check_dataset_keys(cfg: DictConfig) -> None:
    """A data set config, ours or a user's (docs/extending.md), gives what the commands read besides its items."""
    dataset = cfg.get("dataset")
    contract = "a dataset config gives name, num_semseg_classes, image_size [H, W], train and val (docs/extending.md)"
    for key in ("name", "num_semseg_classes", "image_size", "train", "val"):
        if not isinstance(dataset, DictConfig) or key not in dataset:
            raise ConfigError(f"dataset.{key} is missing; {contract}")
    size = OmegaConf.select(cfg, "dataset.image_size")
    if not (OmegaConf.is_list(size) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(f"dataset.image_size={size!r}; expected [H, W], the size of the training items")
    for split in ("train", "val"):
        if not isinstance(dataset[split], DictConfig) or "_target_" not in dataset[split]:
            raise ConfigError(f"dataset.{split} has no _target_; expected the Dataset class that builds the split")


def check_trainer(cfg: DictConfig) -> None:
    if cfg.trainer.steps == 0:
        raise ConfigError(
            "trainer.steps=0; expected an integer >= 1 (to score a checkpoint without training: "
            "python -m demt_exp.evaluate checkpoint=FILE)"
        )
    for key in (
        "trainer.steps",
        "trainer.batch_size",
        "trainer.eval_batch_size",
        "trainer.eval_interval",
        "trainer.log_interval",
    ):
        _integer_at_least(cfg, key, 1)
    _integer_at_least(cfg, "trainer.num_workers", 0)
    _integer_at_least(cfg, "trainer.checkpoint.keep_last", 0)
    if OmegaConf.select(cfg, "trainer.checkpoint.save_optimizer") is not None:
        _one_of(cfg, "trainer.checkpoint.save_optimizer", ("auto", True, False))
    _integer_at_least(cfg, "trainer.checkpoint.interval", 1, optional=True)
    _integer_at_least(cfg, "trainer.stop_at_step", 1, optional=True)
    stop, steps = cfg.trainer.stop_at_step, cfg.trainer.steps
    if stop is not None and stop > steps:
        raise ConfigError(f"trainer.stop_at_step={stop} is beyond the run's trainer.steps={steps}")
    _positive(cfg, "optimizer.lr")
    _positive(cfg, "trainer.head_lr_mult")
    _positive(cfg, "trainer.grad_clip", optional=True)
    _positive(cfg, "trainer.dist_timeout_s")
    if _number(cfg, "trainer.poly_power") < 0:
        raise ConfigError(f"trainer.poly_power={cfg.trainer.poly_power!r}; expected a number >= 0")
    _one_of(cfg, "trainer.precision", PRECISIONS)
    _one_of(cfg, "trainer.nonfinite", NONFINITE_POLICIES)
    _one_of(cfg, "trainer.cpu_allocator", CPU_ALLOCATOR_MODES)
    if OmegaConf.select(cfg, "trainer.cpu_linear") is not None:
        _one_of(cfg, "trainer.cpu_linear", CPU_LINEAR_ROUTES)
    check_grad_scaler(cfg)
    resume = cfg.trainer.resume
    if not (isinstance(resume, bool) or resume == "auto" or (isinstance(resume, str) and Path(resume).is_file())):
        raise ConfigError(f"trainer.resume={resume!r} does not exist; expected auto, true, false or a checkpoint file")
    best = cfg.trainer.checkpoint.best
    if best is not None:
        task, _, metric = str(best).partition("/")
        if task not in cfg.tasks.names or not metric:
            raise ConfigError(
                f"trainer.checkpoint.best={best!r}; expected null or <task>/<metric> with a task of "
                f"tasks.names ({', '.join(cfg.tasks.names)}), e.g. {cfg.tasks.names[0]}/loss"
            )
    _one_of(cfg, "trainer.checkpoint.best_mode", ("auto", "max", "min"))


def check_grad_scaler(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "trainer.grad_scaler") is None:
        return  # a config from before the key existed: the defaults
    enabled = cfg.trainer.grad_scaler.get("enabled", "auto")
    if enabled not in SCALER_ENABLED:
        raise ConfigError(f"trainer.grad_scaler.enabled={enabled!r}; expected auto, true or false")
    _positive(cfg, "trainer.grad_scaler.init_scale")
    _integer_at_least(cfg, "trainer.grad_scaler.growth_interval", 1)
    if not _number(cfg, "trainer.grad_scaler.growth_factor") > 1:
        raise ConfigError(
            f"trainer.grad_scaler.growth_factor={cfg.trainer.grad_scaler.growth_factor!r}; expected a number > 1"
        )
    if not 0 < _number(cfg, "trainer.grad_scaler.backoff_factor") < 1:
        raise ConfigError(
            f"trainer.grad_scaler.backoff_factor={cfg.trainer.grad_scaler.backoff_factor!r}; "
            f"expected a number in (0, 1)"
        )


def check_model_fits(cfg: DictConfig) -> None:
    """Build the model on the meta device (no memory, no weights) and run one forward pass at the
    configured image size, so a backbone/encoder/decoder combination that cannot work fails now."""
    import torch

    from demt_exp.models.model import build_model

    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        if "init" in probe.model:
            probe.model.init = None
    size = [int(s) for s in cfg.dataset.image_size]
    try:
        with torch.device("meta"):
            model = build_model(probe)
        model.eval()(torch.empty(1, 3, *size, device="meta"))
    except Exception as error:  # any construction or shape error means the parts do not fit
        parts = ", ".join(
            f"{group}: {OmegaConf.select(cfg, group + '._target_')}" for group in ("backbone", "encoder", "decoder")
        )
        raise ConfigError(
            f"the configured model does not fit together ({parts}) at dataset.image_size={size}: "
            f"{type(error).__name__}: {error}"
        ) from error


def check_init_file(cfg: DictConfig) -> None:
    """The `model.init` file must exist now, not after the datasets are built."""
    from demt_exp.models.init_setting import init_file

    path = init_file(cfg)
    if path is not None and not Path(path).is_file():
        raise ConfigError(
            f"model.init={path} does not exist; give the file (presets look under model.init_dir, "
            f"$DEMT_WEIGHTS), or model.init=random to train from random weights on purpose"
        )


def validate_settings(cfg: DictConfig) -> None:
    """The checks that need neither torch nor the model: they answer before anything heavy is imported."""
    check_tasks(cfg)
    check_dataset_keys(cfg)
    check_trainer(cfg)
    check_init_file(cfg)


def check_best_metric(cfg: DictConfig) -> None:
    """With best_mode=auto the direction of `trainer.checkpoint.best` comes from its metric, which must exist."""
    from demt_exp.metrics.registry import lower_is_better

    best = cfg.trainer.checkpoint.best
    if best is not None and cfg.trainer.checkpoint.best_mode == "auto":
        try:
            lower_is_better(str(best))
        except ValueError as error:
            raise ConfigError(f"trainer.checkpoint.best: {error} with trainer.checkpoint.best_mode") from None


def validate_config(cfg: DictConfig) -> None:
    """Every check, cheapest first."""
    validate_settings(cfg)
    check_best_metric(cfg)
    check_objective(cfg)
    check_model_fits(cfg)
