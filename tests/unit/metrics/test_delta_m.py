"""Delta_m against hand-computed values, and its references from files and run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from demt_exp.config.compose import SWEEPS_DIR
from demt_exp.metrics.delta_m import (
    STANDARD_METRICS,
    delta_m,
    load_references,
    standard_metrics,
)
from demt_exp.metrics.registry import metric_directions
from demt_exp.utils.errors import ConfigError

DIRECTIONS = {**metric_directions(), "edge": {**metric_directions()["edge"], "odsF": True}}


def test_hand_computed_delta_with_a_lower_is_better_metric() -> None:
    model = {"semseg": {"mIoU": 44.0}, "depth": {"rmse": 0.45}, "normals": {"mean_angle": 22.0}}
    reference = {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.50}, "normals": {"mean_angle": 20.0}}
    result = delta_m(model, reference, ["semseg/mIoU", "depth/rmse", "normals/mean_angle"], DIRECTIONS)
    # semseg: +(44 - 40)/40 = +10 %; depth (lower better): -(0.45 - 0.50)/0.50 = +10 %;
    # normals (lower better): -(22 - 20)/20 = -10 %; mean = +10/3 %.
    assert result.terms == pytest.approx({"semseg/mIoU": 10.0, "depth/rmse": 10.0, "normals/mean_angle": -10.0})
    assert result.value == pytest.approx(10.0 / 3)
    assert result.missing == ()


def test_standard_sets_per_dataset() -> None:
    assert standard_metrics("nyud") == ("semseg/mIoU", "depth/rmse", "normals/mean_angle", "edge/odsF")
    assert standard_metrics("pascal_context") == (
        "semseg/mIoU",
        "human_parts/mIoU",
        "sal/maxF",
        "normals/mean_angle",
        "edge/odsF",
    )
    for keys in STANDARD_METRICS.values():  # every standard metric has a known direction
        assert all(key.split("/")[1] in DIRECTIONS[key.split("/")[0]] for key in keys)
    with pytest.raises(KeyError, match="synthetic"):
        standard_metrics("synthetic")


def test_missing_metric_raises_or_is_left_out_and_named() -> None:
    model = {"semseg": {"mIoU": 30.0}}
    reference = {"semseg": {"mIoU": 20.0}, "edge": {"odsF": 70.0}}
    with pytest.raises(KeyError, match="edge/odsF.*model"):
        delta_m(model, reference, ["semseg/mIoU", "edge/odsF"], DIRECTIONS)
    result = delta_m(model, reference, ["semseg/mIoU", "edge/odsF"], DIRECTIONS, allow_missing=True)
    assert result.value == pytest.approx(50.0) and result.missing == ("edge/odsF",)
    with pytest.raises(ValueError, match="reference value is 0"):
        delta_m(model, {"semseg": {"mIoU": 0.0}}, ["semseg/mIoU"], DIRECTIONS)
    with pytest.raises(ValueError, match="task/metric"):
        delta_m(model, reference, ["mIoU"], DIRECTIONS)


def test_references_from_single_task_run_folders_and_a_yaml_file(tmp_path: Path) -> None:
    for task, values in [("semseg", {"mIoU": 40.0, "loss": 1.2}), ("depth", {"rmse": 0.5})]:
        run = tmp_path / task
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({task: values}))
    (tmp_path / "normals.yaml").write_text("normals:\n  mean_angle: 20.0\n")
    refs = load_references([tmp_path / "semseg", tmp_path / "depth", tmp_path / "normals.yaml"])
    assert refs == {"semseg": {"mIoU": 40.0, "loss": 1.2}, "depth": {"rmse": 0.5}, "normals": {"mean_angle": 20.0}}
    # An evaluation's metrics.json also records its protocol; that entry is not a task.
    (tmp_path / "eval.json").write_text(json.dumps({"protocol": {"boundary": "atrc"}, "edge": {"odsF": 71.0}}))
    assert load_references([tmp_path / "eval.json"]) == {"edge": {"odsF": 71.0}}


def test_reference_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        load_references([tmp_path])
    (tmp_path / "a.json").write_text(json.dumps({"semseg": {"mIoU": 40.0}}))
    (tmp_path / "b.json").write_text(json.dumps({"semseg": {"mIoU": 41.0}}))
    with pytest.raises(ValueError, match="semseg/mIoU.*a.json.*b.json"):
        load_references([tmp_path / "a.json", tmp_path / "b.json"])
    (tmp_path / "bad.yaml").write_text("semseg: {mIoU: high}\n")
    with pytest.raises(ValueError, match="bad.yaml.*non-numeric"):
        load_references([tmp_path / "bad.yaml"])


@pytest.mark.parametrize("dataset, sweep", [("nyud", "single_task_nyud"), ("pascal_context", "single_task_pascal")])
def test_single_task_sweep_runs_one_job_per_task_of_the_standard_set(dataset: str, sweep: str) -> None:
    params = OmegaConf.load(Path(SWEEPS_DIR) / "sweep" / f"{sweep}.yaml").hydra.sweeper.params
    jobs = [value.strip("[]") for value in str(params["tasks.names"]).split(",")]
    assert sorted(jobs) == sorted({key.split("/")[0] for key in STANDARD_METRICS[dataset]})


def test_reference_files_are_data_nothing_in_them_is_resolved_or_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("DEMT_TEST_SECRET", "resolved-secret")
    crafted = {
        "target.yaml": f"semseg:\n  mIoU: {{_target_: builtins.exec, _args_: [\"open('{marker}', 'w')\"]}}\n",
        "env.yaml": "semseg: {mIoU: '${oc.env:DEMT_TEST_SECRET}'}\n",
        "top.yaml": f"_target_: builtins.exec\n_args_: [\"open('{marker}', 'w')\"]\n",
        "tag.yaml": f"semseg: {{mIoU: !!python/object/apply:os.system ['touch {marker}']}}\n",
        "flag.json": json.dumps({"semseg": {"mIoU": True}}),
    }
    expected = {
        "target.yaml": "semseg/mIoU.*non-numeric",
        "env.yaml": r"semseg/mIoU.*non-numeric.*\$\{oc\.env",
        "top.yaml": "entry '_target_' should map",
        "tag.yaml": "cannot be parsed as YAML",
        "flag.json": "semseg/mIoU.*non-numeric value True",
    }
    for name, text in crafted.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=f"{name}.*{expected[name]}") as refused:
            load_references([tmp_path / name])
        assert "resolved-secret" not in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 reads 4e1 as text; it is still a number, and so is an integer.
    (tmp_path / "refs.yaml").write_text("semseg: {mIoU: 4e1}\ndepth: {rmse: 1}\n")
    assert load_references([tmp_path / "refs.yaml"]) == {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 1.0}}
