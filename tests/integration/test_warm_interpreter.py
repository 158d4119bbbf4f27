"""The tests' warm interpreter (tests/helpers/warm_python.py) runs a command as a fresh `python -m` does: the
same weights, metrics, stdout and exit codes, a temporary folder of its own, and fresh interpreters where
start-up settings differ."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import warm_python
from commands import TINY_RUN, assert_bit_identical, final_weights, run_cli
from paths import REPO_ROOT

JOB = [*TINY_RUN, "trainer.steps=2", "trainer.eval_interval=2", "trainer.num_workers=2"]


def test_a_warm_run_equals_a_fresh_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = warm_python.warm_server(REPO_ROOT)
    if server is None:
        pytest.skip(f"{warm_python.FRESH_ENV}=1: every command already runs in a fresh interpreter")
    outputs = {}
    for how in ("warm", "fresh"):
        monkeypatch.setenv(warm_python.FRESH_ENV, "1" if how == "fresh" else "0")
        outputs[how] = run_cli(*JOB, f"hydra.run.dir={tmp_path / how}").stdout.replace(str(tmp_path / how), "RUN")
    assert_bit_identical(final_weights(tmp_path / "warm"), final_weights(tmp_path / "fresh"))
    warm, fresh = (json.loads((tmp_path / how / "metrics.json").read_text()) for how in ("warm", "fresh"))
    assert warm == fresh
    table = [line for line in outputs["warm"].splitlines() if not line.startswith("[")]  # log lines carry times
    assert table and table == [line for line in outputs["fresh"].splitlines() if not line.startswith("[")]
    assert run_cli("trainer.steps=-1", check=False).returncode == 2  # a config mistake's exit code comes back


def test_start_up_settings_and_other_folders_get_a_fresh_interpreter() -> None:
    server = warm_python.warm_server(REPO_ROOT)
    if server is None:
        pytest.skip(f"{warm_python.FRESH_ENV}=1: every command already runs in a fresh interpreter")
    env = dict(server.env)
    assert server.serves(env | {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}, REPO_ROOT)
    for changed in ({"OMP_NUM_THREADS": "7"}, {"PYTHONHASHSEED": "1"}, {"LD_PRELOAD": "x.so"}, {"TMPDIR": "/x"}):
        assert not server.serves(env | changed, REPO_ROOT), changed
    assert not server.serves(env, REPO_ROOT / "tests")
    own = os.pathsep.join(["/my/pkg", *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    assert server.serves(env | {"PYTHONPATH": own}, REPO_ROOT)  # a package in front: put on sys.path by the child
    sep = os.pathsep
    assert warm_python.added_paths({"PYTHONPATH": f"a{sep}b{sep}c"}, {"PYTHONPATH": f"b{sep}c"}) == ["a"]
    assert warm_python.added_paths({"PYTHONPATH": "a"}, {}) == ["a"]
    assert warm_python.added_paths({"PYTHONPATH": f"a{sep}x"}, {"PYTHONPATH": "b"}) is None  # not in front of it
    assert warm_python.added_paths({}, {"PYTHONPATH": "b"}) is None  # taken away
