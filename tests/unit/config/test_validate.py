"""Config values are checked before anything is built; each message names the key and what it takes (the command
failing on one: tests/integration/test_validate_command.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from demt_exp.config.checks import ConfigError, validate_config

BAD_VALUES = [
    ("trainer.steps=-1", "trainer.steps=-1; expected an integer >= 1"),
    ("trainer.steps=0", "trainer.steps=0; expected an integer >= 1"),
    ("trainer.batch_size=0", "trainer.batch_size=0; expected an integer >= 1"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0"),
    ("trainer.eval_interval=0", "trainer.eval_interval=0; expected an integer >= 1"),
    ("trainer.log_interval=0", "trainer.log_interval=0"),
    ("trainer.checkpoint.interval=0", "trainer.checkpoint.interval=0; expected an integer >= 1 or null"),
    ("trainer.checkpoint.keep_last=-1", "trainer.checkpoint.keep_last=-1; expected an integer >= 0"),
    ("trainer.cpu_linear=mkl", "trainer.cpu_linear='mkl'; expected one of blas, onednn"),
    (
        "trainer.checkpoint.save_optimizer=sometimes",
        "trainer.checkpoint.save_optimizer='sometimes'; expected one of auto, true, false",
    ),
    ("optimizer.lr=0", "optimizer.lr=0; expected a number > 0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1; expected a number > 0"),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1; expected a number > 0 or null"),
    ("trainer.head_lr_mult=-1", "trainer.head_lr_mult=-1"),
    ("trainer.stop_at_step=200", "trainer.stop_at_step=200 is beyond the run's trainer.steps=100"),
    ("trainer.num_workers=-2", "trainer.num_workers=-2"),
    ("trainer.precision=fp8", "trainer.precision='fp8'; expected one of fp32, bf16, fp16"),
    ("trainer.nonfinite=ignore", "trainer.nonfinite='ignore'; expected one of stop, skip"),
    ("trainer.grad_scaler.enabled=always", "trainer.grad_scaler.enabled='always'; expected auto, true or false"),
    ("trainer.grad_scaler.init_scale=0", "trainer.grad_scaler.init_scale=0; expected a number > 0"),
    ("trainer.grad_scaler.growth_factor=1", "trainer.grad_scaler.growth_factor=1; expected a number > 1"),
    ("trainer.grad_scaler.backoff_factor=1.5", "trainer.grad_scaler.backoff_factor=1.5; expected a number in (0, 1)"),
    ("trainer.grad_scaler.growth_interval=0", "trainer.grad_scaler.growth_interval=0; expected an integer >= 1"),
    ("trainer.resume=maybe", "trainer.resume='maybe' does not exist"),
    ("tasks.names=[]", "tasks.names=[]; expected a non-empty list"),
    ("tasks.names=[semseg,sematic]", "tasks.names has unknown tasks ['sematic']"),
    ("tasks.names=[semseg,semseg]", "names a task twice"),
    ("trainer.checkpoint.best=depth/rmse", "trainer.checkpoint.best='depth/rmse'"),
    ("trainer.checkpoint.best=semseg/accuracy", "'semseg/accuracy' is no metric this suite reports"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_named_with_what_is_expected(
    override: str, message: str, compose: Callable[[list[str]], DictConfig]
) -> None:
    cfg = compose(["tasks.names=[semseg]", override] if override.startswith("trainer.checkpoint.best") else [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


def test_the_default_and_every_paper_preset_pass(compose: Callable[[list[str]], DictConfig]) -> None:
    validate_config(compose([]))
    validate_config(compose(["experiment=degmix_nyud_vit_b", "model.init=random"]))


def test_a_missing_init_file_is_named_before_anything_is_built(compose: Callable[[list[str]], DictConfig]) -> None:
    with pytest.raises(ConfigError, match="model.init=/nowhere/swin.pth does not exist"):
        validate_config(compose(["model.init=/nowhere/swin.pth"]))


def test_a_backbone_and_encoder_that_do_not_fit_are_refused_before_building(
    compose: Callable[[list[str]], DictConfig],
) -> None:
    """Swin's four maps at strides 4..32 cannot go through the ViT FeatConv neck (one stride)."""
    with pytest.raises(ConfigError, match="does not fit together.*backbone: demt_exp.models.swin"):
        validate_config(compose(["encoder=degmix_vit", "decoder=degmix"]))
