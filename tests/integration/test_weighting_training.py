"""Learned loss weights in real training runs: optimised, checkpointed, logged, and resumed exactly.
(The strategies against their papers' formulas: unit/weighting/test_weighting.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from commands import TINY_RUN, assert_bit_identical, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("method", ["uncertainty", "gradnorm", "dwa"])
def test_learned_weights_are_optimised_checkpointed_logged_and_resume_exactly(tmp_path: Path, method: str) -> None:
    common = [
        *TINY_RUN,
        "tasks=nyud",
        "tasks.names=[semseg,depth]",
        "dataset.num_semseg_classes=5",
        "dataset.train.num_samples=8",
        "trainer.steps=4",
        "trainer.eval_interval=4",
        "trainer.log_interval=1",
        "trainer.checkpoint.interval=2",
        f"weighting={method}",
        "weighting.window=1" if method == "dwa" else "optimizer.lr=0.01",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_cli(*common, f"hydra.run.dir={straight}")
    run_cli(*common, "trainer.stop_at_step=2", f"hydra.run.dir={split}")
    run_cli(*common, f"hydra.run.dir={split}")
    first, second = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (straight, split))
    assert_bit_identical(first["model"], second["model"])
    assert_bit_identical(first["weighting"], second["weighting"])
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    logged = [
        (r["step"], r["train/weight/semseg"], r["train/weight/depth"]) for r in records if "train/weight/depth" in r
    ]
    assert [s for s, *_ in logged] == [1, 2, 3, 4]
    if method == "dwa":  # windows of one step: weights from steps 1 and 2 are used from step 3 on
        assert logged[1][1:] != (1.0, 1.0) and sum(logged[-1][1:]) == pytest.approx(2.0)
        return
    groups = {g["name"]: g for g in first["optimizer"]["param_groups"]}
    assert groups["weighting"]["weight_decay"] == 0.0 and len(groups["weighting"]["params"]) == 1
    initial = {"uncertainty": torch.zeros(2, dtype=torch.float64), "gradnorm": torch.ones(2)}[method]
    learned = first["weighting"]["log_vars" if method == "uncertainty" else "task_weights"]
    assert not torch.allclose(learned, initial)  # the optimiser moved them
    assert len({tuple(w) for _, *w in logged}) > 1  # and the log shows them moving
