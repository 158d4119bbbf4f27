"""Files carry data, never choices of code: crafted checkpoints whose stored config names a callable
(`torch.load` of a second, code-running pickle; `builtins.exec`) or holds an interpolation are refused
by `evaluate` and `predict`, run as users run them, and a marker file proves that nothing ran."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from commands import run_module
from crafted_files import write_code_pickle
from eval_helpers import TINY_SYNTHETIC, write_checkpoint
from omegaconf import OmegaConf
from paths import REPO_ROOT

from demt_exp.config.compose import compose_config
from demt_exp.config.stored import (
    StoredConfigError,
    check_checkpoint_config,
    check_stored_config,
    shipped_targets,
)
from demt_exp.engine.from_checkpoint import merge_stored_config

REPO = REPO_ROOT
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
Change = Callable[[dict[str, Any], Path, Path], None]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training checkpoint of a tiny model (tensors and plain values only)."""
    path = tmp_path_factory.mktemp("genuine") / "last.pt"
    write_checkpoint(path, TINY_SYNTHETIC)
    return path


def craft(genuine: Path, folder: Path, change: Change) -> tuple[Path, Path]:
    """`release.pt`: the genuine checkpoint with its stored config changed, still weights_only-safe, beside
    `aux.pt`, a pickle that creates the marker when fully unpickled; returns (release.pt, marker)."""
    marker = folder / "marker"
    aux = write_code_pickle(folder / "aux.pt", marker)
    payload = torch.load(genuine, map_location="cpu", weights_only=True)
    payload["config"] = copy.deepcopy(payload["config"])
    change(payload["config"], aux, marker)
    release = folder / "release.pt"
    torch.save(payload, release)
    torch.load(release, weights_only=True)  # what makes the file look safe
    return release, marker


def load_aux(config: dict[str, Any], aux: Path, marker: Path) -> None:
    config["backbone"] = {"_target_": "torch.load", "f": str(aux), "weights_only": False}


def exec_code(config: dict[str, Any], aux: Path, marker: Path) -> None:
    config["encoder"] = {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w').close()"]}


def interpolate(config: dict[str, Any], aux: Path, marker: Path) -> None:
    config["backbone"]["variant"] = "${oc.env:HOME}"


def dataset_target(config: dict[str, Any], aux: Path, marker: Path) -> None:
    config["dataset"]["val"].update({"_target_": "torch.load", "f": str(aux), "weights_only": False})


CRAFTED = {  # name: (change, the key and the value the refusal must name)
    "torch_load": (load_aux, "backbone._target_", "'torch.load'"),
    "exec": (exec_code, "encoder._target_", "'builtins.exec'"),
    "interpolation": (interpolate, "backbone.variant", "${oc.env:HOME}"),
    "dataset_target": (dataset_target, "dataset.val._target_", "'torch.load'"),
}


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return run_module(module, *args, check=False, env=ENV)


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> None:
    """Exit code 2 and one `error:` line naming every one of `names`, without a traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for name in names:
        assert name in errors[0], (name, errors[0])


def test_the_code_pickle_really_runs_code_when_fully_unpickled(tmp_path: Path) -> None:
    # The marker is a real witness: a full unpickle of aux.pt creates it (in another process).
    aux, marker = write_code_pickle(tmp_path / "aux.pt", tmp_path / "marker"), tmp_path / "marker"
    assert not marker.exists()
    loaded = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(aux)!r}, weights_only=False)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert marker.exists()


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_evaluate_refuses_a_crafted_stored_config_and_runs_nothing(genuine: Path, tmp_path: Path, case: str) -> None:
    change, key, value = CRAFTED[case]
    release, marker = craft(genuine, tmp_path, change)
    result = run(
        "demt_exp.evaluate", f"checkpoint={release}", f"hydra.run.dir={tmp_path / 'run'}", "trainer.device=cpu"
    )
    assert_refused(result, key, value, str(release))
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # refused before any output: no run folder is left behind


@pytest.mark.parametrize("case", ["torch_load", "exec"])
def test_training_refuses_to_resume_a_crafted_checkpoint_and_runs_nothing(
    genuine: Path, tmp_path: Path, case: str
) -> None:
    """A resume only compares the stored config with this run's; it is still refused before any use."""
    change, key, value = CRAFTED[case]
    release, marker = craft(genuine, tmp_path, change)
    result = run(
        "demt_exp",
        *TINY_SYNTHETIC,
        "trainer.steps=2",
        f"trainer.resume={release}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger.progress_bar=false",
    )
    assert_refused(result, key, value, str(release))
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["torch_load", "interpolation"])
def test_predict_refuses_a_crafted_stored_config_before_any_output(genuine: Path, tmp_path: Path, case: str) -> None:
    change, key, value = CRAFTED[case]
    release, marker = craft(genuine, tmp_path, change)
    out = tmp_path / "out"
    result = run("demt_exp.predict", f"checkpoint={release}", f"out={out}", "limit=1", "trainer.device=cpu")
    assert_refused(result, key, value, str(release))
    assert not marker.exists()
    assert not out.exists()


def test_a_stored_dataset_name_cannot_choose_a_config_file(genuine: Path, tmp_path: Path) -> None:
    # `dataset=<stored name>` is composed: a path there would pull in a YAML file of the download's choosing.
    evil, marker = tmp_path / "evil.yaml", tmp_path / "marker"
    evil.write_text(f"name: evil\nval: {{_target_: builtins.exec, _args_: [\"open('{marker}', 'w')\"]}}\n")
    escape = "/".join([".."] * len(Path(REPO / "conf" / "dataset").parts)) + str(evil.with_suffix(""))

    def rename(config: dict[str, Any], aux: Path, marker: Path) -> None:
        config["dataset"]["name"] = escape

    release, _ = craft(genuine, tmp_path, rename)
    result = run("demt_exp.evaluate", f"checkpoint={release}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_refused(result, "dataset.name", escape, str(release))
    assert not marker.exists()


def test_a_genuine_stored_config_passes_and_names_only_shipped_targets(genuine: Path) -> None:
    stored = torch.load(genuine, weights_only=True)["config"]
    check_checkpoint_config(stored, genuine)
    check_stored_config(stored, genuine, shipped_targets())
    assert {
        "demt_exp.models.swin.SwinBackbone",
        "demt_exp.data.synthetic.SyntheticScenes",
        "torch.optim.AdamW",
    } <= shipped_targets()
    assert not {"torch.load", "builtins.exec", "os.system"} & shipped_targets()


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ({"a": [{"b": {"_target_": "os.system"}}]}, r"x\.pt: stored config key a\[0\]\.b\._target_ names 'os\.system'"),
        ({"_target_": "builtins.eval"}, r"x\.pt: stored config key _target_ names 'builtins\.eval'"),
        ({"a": {"_target_": ["builtins", "exec"]}}, r"key a\._target_ names \['builtins', 'exec'\]"),
        ({"a": {"_args_": ["rm -rf /"]}}, r"key a\._args_ belongs to no _target_"),
        ({"a": {"_partial_": True}}, r"key a\._partial_ belongs to no _target_"),
        ({"a": ["ok", "${oc.env:HOME}"]}, r"key a\[1\] holds the interpolation '\$\{oc\.env:HOME\}'"),
        ({"a\nb": {"_target_": "os.system"}}, r"key 'a\\nb'\._target_"),
    ],
)
def test_every_crafted_node_is_named_by_its_dotted_key(stored: dict, message: str) -> None:
    with pytest.raises(StoredConfigError, match=message) as refused:
        check_stored_config(stored, "x.pt", shipped_targets())
    assert "\n" not in str(refused.value)


def test_targets_of_the_users_own_config_folder_are_trusted(tmp_path: Path) -> None:
    # A backbone the user configured (a folder given with hydra.searchpath) is the user's choice: a checkpoint
    # trained with it is accepted when the command line names that folder again, and refused when it does not.
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "mine.yaml").write_text("_target_: my_package.MyBackbone\nwidth: 3\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    stored = OmegaConf.to_container(compose_config([searchpath, "backbone=mine"]), resolve=True)
    assert isinstance(stored, dict) and stored["backbone"]["_target_"] == "my_package.MyBackbone"
    with_folder = compose_config([searchpath, "checkpoint=x.pt"], "evaluate")
    assert merge_stored_config(stored, with_folder, [searchpath, "checkpoint=x.pt"], "x.pt").backbone.width == 3
    without = compose_config(["checkpoint=x.pt"], "evaluate")
    with pytest.raises(StoredConfigError, match="x.pt: stored config key backbone._target_ names 'my_package"):
        merge_stored_config(stored, without, ["checkpoint=x.pt"], "x.pt")
    # Choosing it on the command line trusts it too (and then the command line's backbone is used).
    chosen = compose_config([searchpath, "backbone=mine", "checkpoint=x.pt"], "evaluate")
    check_checkpoint_config(stored, "x.pt", chosen)


def test_resume_check_compares_against_the_current_config(genuine: Path) -> None:
    # Resuming compares stored values, never instantiates them, and still refuses a config that names code.
    current = compose_config(TINY_SYNTHETIC)
    stored = torch.load(genuine, weights_only=True)["config"]
    check_checkpoint_config(stored, genuine, current)
    stored["optimizer"]["_target_"] = "torch.load"
    with pytest.raises(StoredConfigError, match=f"checkpoint {genuine}: stored config key optimizer._target_"):
        check_checkpoint_config(stored, genuine, current)
