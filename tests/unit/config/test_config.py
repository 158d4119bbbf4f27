"""Hydra composition: every group option builds, key typos get hints, the loss follows the task list (the command
failing on a typo: tests/integration/test_config_cli.py)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from paths import REPO_ROOT

from demt_exp.config.errors import unknown_key_hints
from demt_exp.engine.optim import (
    build_optimizer,
    build_poly_scheduler,
    parameter_groups,
    poly_factor,
)
from demt_exp.losses.task_losses import MultiTaskLoss, build_loss

REPO = REPO_ROOT
CONF = REPO / "conf"


def test_default_config_groups(compose) -> None:
    cfg = compose([])
    assert cfg.dataset.name == "synthetic"
    assert cfg.backbone._target_ == "demt_exp.models.swin.SwinBackbone" and cfg.backbone.variant == "swin_t"
    assert cfg.encoder._target_.endswith("DeformableMixerEncoder") and cfg.decoder.attention == "official"
    assert list(cfg.tasks.names) == ["semseg", "human_parts", "sal", "normals", "edge", "depth"]
    assert {"steps", "batch_size", "eval_interval", "precision", "seed"} <= set(cfg.trainer)


@pytest.mark.parametrize(
    "group", ["dataset", "backbone", "encoder", "decoder", "optimizer", "tasks", "trainer", "logger"]
)
def test_every_option_of_every_group_composes(compose, group: str) -> None:
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose([f"{group}={option}"])
        assert cfg[group] is not None, f"{group}={option}"


def test_datasets_instantiate_from_config(compose) -> None:
    cfg = compose(["dataset.train.num_samples=3", "tasks=nyud"])
    train = instantiate(cfg.dataset.train)
    assert len(train) == 3 and set(train[0]) == {"image", "semseg", "depth", "normals", "edge", "meta"}


def test_optimizers_instantiate_with_backbone_and_head_groups(compose) -> None:
    model = torch.nn.ModuleDict({"backbone": torch.nn.Linear(2, 2), "head": torch.nn.Linear(2, 1)})
    model["backbone"].bias.requires_grad_(False)  # frozen parameters are left out
    for option, cls in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        cfg = compose([f"optimizer={option}"])
        optimizer = build_optimizer(cfg.optimizer, model, head_lr_mult=10.0)
        assert isinstance(optimizer, cls)
        groups = {g["name"]: g for g in optimizer.param_groups}
        assert groups["backbone"]["params"] == [model["backbone"].weight]
        assert groups["head"]["lr"] == pytest.approx(10.0 * cfg.optimizer.lr)
    sgd = compose(["optimizer=sgd"]).optimizer
    assert (sgd.lr, sgd.momentum, sgd.weight_decay) == (1e-3, 0.9, 5e-4)  # SPEC 5.1
    assert len(parameter_groups(model, 1.0, 1.0)) == 2


def test_poly_schedule_matches_formula() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = build_poly_scheduler(optimizer, total_steps=10, power=0.9)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5 * (1 - i / 10) ** 0.9 for i in range(10)])
    assert optimizer.param_groups[0]["lr"] == 0.0 and poly_factor(12, 10, 0.9) == 0.0


def test_loss_follows_task_names_and_dataset_weights(compose) -> None:
    loss = build_loss(compose(["tasks=pascal", "tasks.names=[semseg,sal]"]).tasks)
    assert isinstance(loss, MultiTaskLoss)
    assert dict(loss.weights) == {"semseg": 1.0, "sal": 5.0}
    with pytest.raises(KeyError, match="depth"):
        build_loss(compose(["tasks=pascal", "tasks.names=[semseg,depth]"]).tasks)


def test_key_hints_are_silent_for_valid_keys() -> None:
    assert unknown_key_hints(["trainer.steps=3", "backbone=swin_s", "encoder.dim=64"]) == []
    hints = unknown_key_hints(["decoder.atention=global", "tasks=nyud"])
    assert len(hints) == 1 and "attention" in hints[0] and "'decoder'" in hints[0]
