"""Tasks as objects: a config's own task (the example package's shading) joins the registry and every reader
(loss with its options, metrics, chance level, files, panels, the item contract, uncertainty weighting);
defining one wrongly is one error naming the key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from paths import REPO_ROOT
from PIL import Image

from demt_exp.config.objective import objective_direction
from demt_exp.data.contract import DatasetContractError, check_sample
from demt_exp.data.tasks import TASK_NAMES
from demt_exp.losses import MultiTaskLoss
from demt_exp.metrics.registry import MultiTaskMetrics, lower_is_better
from demt_exp.tasks import define_tasks, get_task, known_tasks, output_channels, registry
from demt_exp.utils.errors import ConfigError
from demt_exp.viz.panels import prediction_panel
from demt_exp.viz.prediction_files import save_task_file
from demt_exp.weighting.uncertainty import likelihood_factor

EXTENSION = REPO_ROOT / "tests" / "fixtures" / "extension"
SHADING = {"tasks": {"define": {"shading": {"_target_": "my_ext.tasks.Shading"}}}}


@pytest.fixture
def extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example package importable and no task defined, for this test only."""
    monkeypatch.syspath_prepend(str(EXTENSION))
    monkeypatch.setattr(registry, "_DEFINED", {})
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "my_ext"]:
        del sys.modules[name]


@pytest.fixture
def defined(extension: None) -> None:
    """The example package's shading task defined, for this test only."""
    define_tasks(OmegaConf.create(SHADING))


def shading_target() -> torch.Tensor:
    target = torch.linspace(0, 1, 2 * 4 * 5).reshape(2, 1, 4, 5)
    target[:, :, 0] = 255  # unknown
    return target


def test_a_defined_task_is_known_everywhere_the_suite_reads_tasks(defined: None) -> None:
    task = get_task("shading")
    assert type(task).__module__ == "my_ext.tasks" and known_tasks()[-1] == "shading"
    assert output_channels(["semseg", "shading"], 9) == {"semseg": 9, "shading": 1}
    assert likelihood_factor("shading") == 0.5 and likelihood_factor("semseg") == 1.0
    assert lower_is_better("shading/mae") and not lower_is_better("shading/within_0.1")
    assert objective_direction(["shading/mae", "semseg/mIoU"]) == ["minimize", "maximize"]

    pred, target = torch.full((2, 1, 4, 5), 0.5), shading_target()
    metrics = MultiTaskMetrics(["shading"], num_semseg_classes=1)
    metrics.update({"shading": pred}, {"shading": target})
    known = target[target != 255]
    expected = (pred[target != 255] - known).abs()
    got = metrics.compute()["shading"]
    assert got["mae"] == pytest.approx(float(expected.mean()))
    assert got["within_0.1"] == pytest.approx(100 * float((expected < 0.1).double().mean()))

    image = torch.zeros(3, 4, 5)
    check_sample(
        {"image": image, "shading": target[0], "meta": {"id": "a", "size": torch.tensor([4, 5])}}, ["shading"], "x"
    )
    with pytest.raises(DatasetContractError, match=r"'shading' is a torch.int64 tensor .* expected a torch.float32"):
        check_sample({"image": image, "shading": target[0].long(), "meta": {}}, ["shading"], "x")


def test_loss_options_reach_the_tasks_loss(defined: None) -> None:
    pred = torch.randn(2, 1, 4, 5, requires_grad=True)
    target = shading_target()
    known = target != 255
    for options, beta in (({"shading": {"beta": 0.05}}, 0.05), (None, 0.1)):
        loss = MultiTaskLoss({"shading": 2.0}, options=options)
        total, per_task = loss({"shading": pred}, {"shading": target})
        by_hand = F.smooth_l1_loss(pred[known], target[known], beta=beta).detach()
        assert float(per_task["shading"]) == pytest.approx(float(by_hand)) and float(total) == pytest.approx(
            2 * float(by_hand)
        )
    assert MultiTaskLoss({"edge": 1.0}, edge_pos_weight=0.8).options == {"edge": {"pos_weight": 0.8}}
    with pytest.raises(ValueError, match=r"loss options for \['depth'\], which have no loss weight"):
        MultiTaskLoss({"shading": 1.0}, options={"depth": {}})


def test_a_float_task_writes_its_values_and_draws_with_one_range(defined: None, tmp_path: Path) -> None:
    pred = torch.linspace(-0.2, 1.4, 20).reshape(1, 4, 5)
    written = save_task_file("shading", pred, tmp_path / "shading" / "img")
    assert [p.name for p in written] == ["img.png", "img.npy"]
    assert np.array_equal(np.load(written[1]), pred[0].numpy())
    assert np.asarray(Image.open(written[0])).shape == (4, 5, 3)
    task, target = get_task("shading"), shading_target()[0]
    labelled = target[target != 255]
    assert task.display_range(pred, target) == (float(labelled.min()), float(labelled.max()))
    assert task.display_range(pred, None) == (pytest.approx(-0.2), pytest.approx(1.4))
    assert get_task("semseg").display_range(torch.zeros(3, 4, 5), None) is None
    panel = prediction_panel(torch.zeros(3, 4, 5), {"shading": pred}, {"shading": target})
    assert panel.size[1] > panel.size[0] // 2  # two rows: prediction and ground truth
    constant = task.constant([target, target], 1)
    assert constant.tolist() == [pytest.approx(float(target[target != 255].mean()))]


@pytest.mark.parametrize(
    ("define", "message"),
    [
        ({"semseg": {"_target_": "my_ext.tasks.Shading"}}, "tasks.define.semseg builds Shading(name='shading')"),
        ({"shade": {"_target_": "my_ext.tasks.Shading"}}, "expected a task called 'shade'"),
        ({"shading": {"beta": 1}}, "tasks.define.shading has no _target_"),
        ({"shading": {"_target_": "my_ext.tasks.ShadingError"}}, "builds a ShadingError; a task must be a"),
        ({"shading": {"_target_": "my_ext.nowhere.Shading"}}, "tasks.define.shading: my_ext.nowhere.Shading cannot"),
    ],
)
def test_a_wrong_definition_is_one_error_naming_the_key(define: dict, message: str, extension: None) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        define_tasks(OmegaConf.create({"tasks": {"define": define}}))
    assert known_tasks()[-1] == "depth"  # nothing was defined


def test_a_built_in_name_cannot_be_taken_and_an_unknown_task_points_to_define(extension: None) -> None:
    from my_ext.tasks import Shading

    class Depth(Shading):
        name = "depth"

    with pytest.raises(ConfigError, match="is called 'depth', the name of a built-in task"):
        registry.register_task(Depth())
    with pytest.raises(KeyError, match=r"unknown task 'shadng'.*tasks.define.<name>"):
        get_task("shadng")


def test_tasks_first_used_under_the_meta_device_still_score_on_the_cpu() -> None:
    """The model-fit check builds the model on the meta device, which is where a fresh process first asks for
    the tasks and imports their metrics: nothing a metric module makes at import may land there."""
    script = """
import torch
from demt_exp.config.checks import check_model_fits
from demt_exp.config.compose import compose_config
from demt_exp.metrics.registry import MultiTaskMetrics
from demt_exp.data.synthetic import SyntheticScenes
from torch.utils.data import default_collate
cfg = compose_config(["+backbone.embed_dim=16", "+backbone.depths=[2,2,2,2]", "+backbone.num_heads=[1,2,2,4]",
                      "dataset.image_size=[32,32]", "encoder.dim=32"])
check_model_fits(cfg)
tasks = list(cfg.tasks.names)
scenes = SyntheticScenes(num_samples=2, image_size=(32, 32), num_semseg_classes=8)
batch = default_collate([scenes[0], scenes[1]])
metrics = MultiTaskMetrics(tasks, num_semseg_classes=8)
metrics.update({t: torch.zeros(2, c, 32, 32) for t, c in {"semseg": 8, "human_parts": 7, "sal": 2, "normals": 3,
                "edge": 1, "depth": 1}.items()}, batch)
print(sorted(metrics.compute()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == str(sorted(TASK_NAMES))
