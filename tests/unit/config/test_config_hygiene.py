"""Every option of every group composes AND instantiates, so a broken option fails here, not on a cluster.

Models on the meta device (no memory, no weights), data sets on tiny fake folders in their real
on-disk layouts, optimisers on a real model's parameter groups, losses on every task set.
Presets (conf/experiment) are built on the meta device in test_presets.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_cityscapes import write_fake_cityscapes
from hydra.utils import instantiate

from demt_exp.config.compose import CONF_DIR, compose_config
from demt_exp.data.example_nyud import write_fake_nyud
from demt_exp.data.example_pascal import write_fake_pascal
from demt_exp.engine.optim import build_optimizer
from demt_exp.losses.task_losses import build_loss
from demt_exp.models.model import build_model

CONF = Path(CONF_DIR)
# Options that only make sense beside another one (the concat encoder has no `dim` for a mixer decoder).
PARTNERS = {"encoder=concat": ["decoder=fcn"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


MODEL_OPTIONS = [f"{group}={option}" for group in ("backbone", "encoder", "decoder") for option in options(group)]


@pytest.mark.parametrize("choice", MODEL_OPTIONS)
def test_every_backbone_encoder_and_decoder_option_builds_on_the_meta_device(choice: str) -> None:
    cfg = compose_config([choice, *PARTNERS.get(choice, [])])
    with torch.device("meta"):
        model = build_model(cfg)
    outputs = {name for name, _ in model.named_children()}
    assert "backbone" in outputs and sum(p.numel() for p in model.parameters()) > 0


def test_the_concat_encoder_with_a_mixer_decoder_is_refused_naming_the_key() -> None:
    cfg = compose_config(["encoder=concat"])
    with pytest.raises(Exception, match="encoder.dim"), torch.device("meta"):
        build_model(cfg)


FAKES = {
    "synthetic": lambda root: None,
    "nyud": lambda root: write_fake_nyud(root / "NYUDv2", size=(24, 32)),
    "pascal_context": lambda root: write_fake_pascal(root / "PASCALContext", size=(24, 32)),
    "cityscapes": lambda root: write_fake_cityscapes(root / "cityscapes", size=(16, 32)),
}


def test_fakes_cover_every_dataset_option() -> None:
    assert set(FAKES) == set(options("dataset"))


@pytest.mark.parametrize("dataset", sorted(FAKES))
def test_every_dataset_option_instantiates_on_tiny_data_in_its_real_layout(dataset: str, tmp_path: Path) -> None:
    root = FAKES[dataset](tmp_path)
    overrides = [f"dataset={dataset}", "dataset.image_size=[16,32]"]
    if root is not None:
        overrides.append(f"dataset.root={root}")
    cfg = compose_config(overrides)
    for split in ("train", "val"):
        data = instantiate(cfg.dataset[split])
        sample = data[0]
        assert len(data) > 0 and set(cfg.tasks.names) <= set(sample), f"dataset={dataset} {split}: {sorted(sample)}"
        assert sample["image"].shape[0] == 3


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_option_instantiates_on_the_models_parameter_groups(option: str) -> None:
    cfg = compose_config([f"optimizer={option}", "encoder.dim=32", "dataset.image_size=[32,32]"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg.optimizer, model, head_lr_mult=10.0)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(10 * groups["backbone"]["lr"]) == pytest.approx(10 * cfg.optimizer.lr)
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("option", options("tasks"))
def test_every_task_set_builds_its_loss_with_one_weight_per_task(option: str) -> None:
    cfg = compose_config([f"tasks={option}"])
    loss = build_loss(cfg.tasks)
    weights = dict(loss.weights)
    assert list(weights) == list(cfg.tasks.names)
    assert weights == {t: float(cfg.tasks.loss.weights[t]) for t in cfg.tasks.names}


@pytest.mark.parametrize("group, option", [(g, o) for g in ("logger", "trainer", "recipe") for o in options(g)])
def test_every_logger_trainer_and_recipe_option_composes(group: str, option: str) -> None:
    cfg = compose_config([f"+{group}={option}"] if group == "recipe" else [f"{group}={option}"])
    assert cfg.trainer.steps > 0 and "progress_bar" in cfg.logger and "history" in cfg.logger
