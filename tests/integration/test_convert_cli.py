"""`python -m demt_exp.convert` run as a user runs it: an official Swin-T checkpoint becomes our state dict
(which `model.init` loads, like the official file and our training checkpoints), and nothing in the file it
reads chooses code."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import official_checkpoints
import pytest
import torch
from commands import run_module
from crafted_files import write_code_pickle
from official_checkpoints import assert_same_tensors, save_lightning
from omegaconf import DictConfig

from demt_exp.engine.rng import rng_state
from demt_exp.models.load_weights import apply_init
from demt_exp.models.model import MultiTaskModel, build_model
from demt_exp.models.official_export import ours_to_official

Compose = Callable[[list[str]], DictConfig]


@pytest.fixture(scope="module")
def tiny_demt() -> tuple[list[str], MultiTaskModel]:
    """A DeMT NYUD model with a narrow head (the official names do not depend on the width)."""
    return official_checkpoints.tiny_demt()


def convert(*args: str) -> subprocess.CompletedProcess:
    return run_module("demt_exp.convert", *args, check=False)


def test_cli_converts_and_model_weights_loads_both_formats(
    compose: Compose, tiny_demt: tuple[list[str], MultiTaskModel], tmp_path: Path
) -> None:
    args, model = tiny_demt
    official = save_lightning(ours_to_official(model), tmp_path / "official.ckpt")
    out = tmp_path / "converted" / "ours.pt"
    result = convert("--official", str(official), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert "converted 325 tensors" in result.stdout and "dropped 16" in result.stdout, result.stdout
    assert_same_tensors(torch.load(out, weights_only=True), model.state_dict())

    # Our training checkpoints keep the state dict under "model", next to pickled RNG states.
    training = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}, "step": 7, "rng": rng_state()}, training)
    for path in (official, out, training):
        cfg = compose([*args, f"model.init={path}"])
        loaded = build_model(cfg)
        assert apply_init(loaded, cfg) == str(path)
        assert_same_tensors(loaded.state_dict(), model.state_dict())


def test_nothing_in_the_official_file_chooses_code(tiny_demt: tuple[list[str], MultiTaskModel], tmp_path: Path) -> None:
    args, model = tiny_demt
    marker = tmp_path / "marker"
    aux = write_code_pickle(tmp_path / "aux.pt", marker)
    # A weights_only-safe file whose hyper-parameters name code: the command line alone describes the model.
    crafted = tmp_path / "official.ckpt"
    hyper = {"backbone": {"_target_": "torch.load", "f": str(aux), "weights_only": False}, "root": "${oc.env:HOME}"}
    torch.save({"state_dict": ours_to_official(model), "hyper_parameters": hyper}, crafted)
    out = tmp_path / "ours.pt"
    result = convert("--official", str(crafted), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert_same_tensors(torch.load(out, weights_only=True), model.state_dict())
    assert not marker.exists()
    # A file that is itself a code-running pickle: refused in one line naming it and the switch, nothing runs.
    result = convert("--official", str(aux), "--out", str(tmp_path / "x.pt"), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(aux) in errors[0] and "--trust" in errors[0], result.stderr
    assert not marker.exists() and not (tmp_path / "x.pt").exists()
