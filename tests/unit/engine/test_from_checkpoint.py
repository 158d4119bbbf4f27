"""Which config a checkpoint is evaluated with: the stored one, except every key the command line names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from demt_exp.config.compose import compose_config
from demt_exp.config.stored import StoredConfigError
from demt_exp.engine.from_checkpoint import (
    composable,
    inference_config,
    merge_stored_config,
    named_keys,
    read_training_checkpoint,
)
from demt_exp.utils.errors import UserError


def stored_run(**extra: str) -> dict:
    """The resolved config a NYUD training run stores in its checkpoint."""
    overrides = [
        "dataset=nyud",
        "dataset.root=/data/train-machine/NYUDv2",
        "backbone=swin_s",
        "backbone.drop_path_rate=0.3",
        "tasks.names=[semseg,depth]",
        "model.init=/init/upernet.pth",
        "dataset.image_size=[448,576]",
    ]
    return OmegaConf.to_container(compose_config(overrides), resolve=True)  # type: ignore[return-value]


def merged(overrides: list[str]) -> OmegaConf:
    composed = compose_config(["dataset=nyud", "checkpoint=x.pt", *overrides], "evaluate")
    return merge_stored_config(stored_run(), composed, ["checkpoint=x.pt", *overrides])


def test_model_and_dataset_come_from_the_checkpoint() -> None:
    cfg = merged([])
    assert cfg.backbone.variant == "swin_s" and cfg.backbone.drop_path_rate == 0.3
    assert list(cfg.tasks.names) == ["semseg", "depth"] and list(cfg.dataset.val.tasks) == ["semseg", "depth"]
    assert cfg.dataset.val.root == "/data/train-machine/NYUDv2" and list(cfg.dataset.val.image_size) == [448, 576]
    assert cfg.dataset.val.split == "val"
    assert cfg.model.init is None  # the checkpoint's own weights replace the initialisation file


def test_keys_named_on_the_command_line_win() -> None:
    cfg = merged(["dataset.root=/here/NYUDv2", "backbone.drop_path_rate=0.0", "tasks.names=[semseg]"])
    assert cfg.dataset.val.root == "/here/NYUDv2"  # the val split follows the new root
    assert cfg.backbone.variant == "swin_s" and cfg.backbone.drop_path_rate == 0.0
    assert list(cfg.dataset.val.tasks) == ["semseg"]
    cfg = merged(["backbone=swin_t"])
    assert cfg.backbone.variant == "swin_t"


def test_named_keys_strip_prefixes_and_skip_hydra() -> None:
    assert named_keys(["+eval.x=1", "~model.init", "dataset=nyud", "hydra.run.dir=o"]) == [
        "eval.x",
        "model.init",
        "dataset",
    ]


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.pt")):
        read_training_checkpoint(tmp_path / "missing.pt")


def test_a_stored_node_must_be_a_mapping_not_a_yaml_text() -> None:
    # OmegaConf.create would parse a string as a YAML document, targets included.
    stored = {**stored_run(), "backbone": "_target_: torch.load\nf: aux.pt\nweights_only: false"}
    composed = compose_config(["dataset=nyud", "checkpoint=x.pt"], "evaluate")
    with pytest.raises(StoredConfigError, match="x.pt: stored config key backbone is a str; expected a mapping"):
        merge_stored_config(stored, composed, ["checkpoint=x.pt"], "x.pt")


def test_the_stored_dataset_name_is_an_option_name_not_a_path(tmp_path: Path) -> None:
    stored = stored_run()
    stored["dataset"]["name"] = "../../../elsewhere/evil"
    checkpoint = tmp_path / "last.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "step": 0, "config": stored}, checkpoint)
    with pytest.raises(StoredConfigError, match=f"checkpoint {checkpoint}: stored config key dataset.name is '../"):
        inference_config(checkpoint, [f"checkpoint={checkpoint}"], "evaluate")
    stored["dataset"]["name"] = "gone"  # a plain name that is no option here: named, with the way out
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "step": 0, "config": stored}, checkpoint)
    with pytest.raises(UserError, match="dataset=gone, which is not a dataset option here.*dataset=nyud"):
        inference_config(checkpoint, [f"checkpoint={checkpoint}"], "evaluate")


def test_a_file_that_is_not_a_torch_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match=f"checkpoint {tmp_path / 'notes.pt'} cannot be read"):
        read_training_checkpoint(tmp_path / "notes.pt")


def test_overrides_keep_the_users_config_folders_and_drop_hydras_own() -> None:
    line = ["checkpoint=x.pt", "hydra.run.dir=out", "hydra.searchpath=[file:///mine]", "backbone=mine"]
    assert composable(line) == ["hydra.searchpath=[file:///mine]", "checkpoint=x.pt", "backbone=mine"]
