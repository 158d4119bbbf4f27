"""Checkpoint files: never unpickle code, keep-last / best / last, stale temporaries, atomic saves, payloads that
load with weights_only=True. The commands refusing a crafted file:
tests/integration/test_checkpoint_crafted_files.py."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from crafted_files import crafted_file

from demt_exp.engine.checkpoint import (
    CheckpointFolder,
    load_checkpoint,
    remove_stale_temporaries,
    save_atomic,
)
from demt_exp.engine.rng import rng_state, set_rng_state
from demt_exp.utils.torch_files import UntrustedCheckpointError, safe_load


def test_a_crafted_pickle_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    path, marker = crafted_file(tmp_path)
    with pytest.raises(UntrustedCheckpointError, match=str(path)) as error:
        load_checkpoint(path)
    assert "trust_checkpoints=true" in str(error.value)
    assert not marker.exists()


def test_trust_opts_in_to_a_full_unpickle(tmp_path: Path) -> None:
    path, marker = crafted_file(tmp_path)
    load_checkpoint(path, trust=True)
    assert marker.exists()  # the full unpickle really ran the file's code: that is what trust means


def test_training_payload_loads_with_weights_only(tmp_path: Path) -> None:
    """RNG states, config and optimiser state are tensors and plain values: weights_only reads them."""
    torch.manual_seed(3)
    state = rng_state()
    expected = torch.rand(4)
    path = save_atomic(
        {
            "model": {},
            "optimizer": {},
            "scheduler": {},
            "step": 2,
            "rng": [state],
            "config": {"trainer": {"steps": 4, "lr": 0.1, "names": ["a", None]}},
        },
        tmp_path / "c.pt",
    )
    payload = torch.load(path, weights_only=True)
    torch.manual_seed(99)
    set_rng_state(payload["rng"][0])
    assert torch.equal(torch.rand(4), expected)
    assert payload["config"]["trainer"]["names"] == ["a", None]


def test_rng_state_round_trip_covers_python_numpy_and_torch() -> None:
    import random

    import numpy as np

    state = rng_state()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_folder_keeps_the_newest_steps_and_points_last_and_best(tmp_path: Path) -> None:
    folder = CheckpointFolder(tmp_path / "checkpoints", keep_last=2)
    for step in (2, 4, 6):
        folder.save({"step": step, "model": {}, "optimizer": {}, "scheduler": {}}, step, best=step == 4)
    assert [s for s, _ in folder.step_files()] == [4, 6]
    assert load_checkpoint(folder.last)["step"] == 6
    assert load_checkpoint(folder.best)["step"] == 4  # best.pt outlives the pruning of its step file
    assert not (tmp_path / "checkpoints" / "step_00000002.pt").exists()
    with pytest.raises(ValueError, match="keep_last=-1; expected an integer >= 0"):
        CheckpointFolder(tmp_path, keep_last=-1)


def test_folder_with_keep_last_0_writes_only_best(tmp_path: Path) -> None:
    folder = CheckpointFolder(tmp_path / "checkpoints", keep_last=0)
    assert folder.save({"step": 2, "model": {}, "scheduler": {}}, 2) is None
    assert not (tmp_path / "checkpoints").exists()  # no step file, no last.pt: nothing was written
    folder.save({"step": 4, "model": {}, "scheduler": {}}, 4, best=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt"]
    assert load_checkpoint(folder.best)["step"] == 4 and not folder.last.exists()


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".step_00000004.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    save_atomic({"step": 2}, folder / "last.pt")
    removed = remove_stale_temporaries(folder)
    assert [p.name for p in removed] == [".step_00000004.pt.abc123.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]


def test_missing_file_and_wrong_content_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        safe_load(tmp_path / "nowhere.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(KeyError, match="partial.pt"):
        load_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "garbage.pt").write_bytes(os.urandom(64))
    with pytest.raises((RuntimeError, pickle.UnpicklingError), match="garbage.pt"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {}, "step": 1}, path)
    real_save = torch.save

    def crash_half_way(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"model": {"w": torch.zeros(3)}, "optimizer": {}, "scheduler": {}, "step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    survivor = load_checkpoint(path)
    assert survivor["step"] == 1 and torch.equal(survivor["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_corrupt_checkpoint_is_reported_by_path(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=str(path)):
        load_checkpoint(path)
