"""`objective`: what a job returns to a sweeper, each metric's direction, and the checks before a search."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from demt_exp.config.objective import check_objective, objective_direction, objective_value
from demt_exp.utils.errors import ConfigError

RESULTS = {"semseg": {"mIoU": 41.5}, "depth": {"rmse": 0.62}, "multi_task": {"delta_m": -1.25}}


def test_one_metric_returns_its_value_and_a_list_returns_a_list() -> None:
    assert objective_value("semseg/mIoU", RESULTS) == 41.5
    assert objective_value(["semseg/mIoU", "depth/rmse"], RESULTS) == [41.5, 0.62]
    assert objective_value(OmegaConf.create({"o": ["multi_task/delta_m"]}).o, RESULTS) == [-1.25]
    assert objective_value(None, RESULTS) is None
    with pytest.raises(ConfigError, match="no normals/mean_angle.*semseg/mIoU, depth/rmse"):
        objective_value("normals/mean_angle", RESULTS)


def test_the_direction_follows_each_metric() -> None:
    assert objective_direction("semseg/mIoU") == "maximize"
    assert objective_direction("depth/rmse") == "minimize"
    assert objective_direction("multi_task/delta_m") == "maximize"
    listed = OmegaConf.create({"o": ["semseg/mIoU", "depth/rmse", "normals/mean_angle", "edge/odsF"]}).o
    assert objective_direction(listed) == ["maximize", "minimize", "minimize", "maximize"]
    with pytest.raises(ConfigError, match="set objective=task/metric"):
        objective_direction(None)
    with pytest.raises(ConfigError, match="semseg/nope.*hydra.sweeper.direction"):
        objective_direction("semseg/nope")


def test_the_resolver_gives_the_optuna_sweeper_its_direction() -> None:
    import demt_exp.__main__  # noqa: F401  (registers the resolver, as the command does)

    cfg = OmegaConf.create({"objective": ["semseg/mIoU", "depth/rmse"], "d": "${objective_direction:${objective}}"})
    assert list(cfg.d) == ["maximize", "minimize"]


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ("semseg", "'semseg' is not task/metric"),
        ("human_parts/mIoU", "names task 'human_parts', which is not in tasks.names"),
        ("multi_task/delta_m", "needs single-task references in eval.delta_m.references"),
        ("depth/nope", "'depth/nope' is no metric this suite reports"),
    ],
)
def test_a_search_that_cannot_work_is_refused_before_training(compose, objective: str, message: str) -> None:
    cfg = compose(["tasks=nyud", f"objective={objective}"])
    with pytest.raises(ConfigError, match=message):
        check_objective(cfg)


def test_a_sound_objective_passes_its_check(compose) -> None:
    check_objective(compose(["tasks=nyud", "objective=[semseg/mIoU,depth/rmse]"]))
    check_objective(compose(["tasks=nyud", "objective=multi_task/delta_m", "eval.delta_m.references=[refs.yaml]"]))


def test_a_chosen_plugin_that_is_not_installed_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from demt_exp.config import errors

    assert errors.missing_extra_hints(["hydra/sweeper=optuna", "hydra/launcher=slurm"]) == []  # dev installs both
    monkeypatch.setattr(errors, "EXTRAS", (("hydra/sweeper=optuna", "hydra_plugins.no_such_sweeper", "search"),))
    assert errors.missing_extra_hints(["objective=semseg/mIoU"]) == []
    assert errors.missing_extra_hints(["hydra/sweeper=optuna"]) == [
        "hydra/sweeper=optuna needs the 'search' extra: pip install 'demt_exp[search]'"
    ]
