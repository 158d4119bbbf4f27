"""fp16 loss scaling in the training command: the scaler's state is logged, checkpointed and resumed exactly
(CPU, with torch.amp.GradScaler("cpu")), and real fp16 autocast on CUDA scales, skips and checkpoints.
The step itself: tests/unit/engine/test_grad_scaler.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from commands import TINY_RUN, assert_bit_identical, final_weights, run_cli

# A first scale of 2^127 overflows at step 1 and is backed off to 2^67; then it doubles after
# every 2 applied steps: 2^68 after step 3, 2^69 after step 5.
SCALED = [
    *TINY_RUN,
    "dataset.train.num_samples=12",
    "trainer.log_interval=1",
    "trainer.steps=6",
    "trainer.eval_interval=6",
    "trainer.checkpoint.interval=3",
    "trainer.grad_scaler.enabled=true",
    "trainer.grad_scaler.init_scale=1.7014118346046923e38",
    "trainer.grad_scaler.backoff_factor=8.673617379884035e-19",
    "trainer.grad_scaler.growth_interval=2",
]
EXPECTED_SCALES = [2.0**67, 2.0**67, 2.0**68, 2.0**68, 2.0**69, 2.0**69]


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


@pytest.mark.slow
def test_scaler_state_is_checkpointed_and_a_resumed_run_equals_the_straight_one(tmp_path: Path) -> None:
    """trainer.nonfinite=stop (the default) does not stop at the overflowed step 1; the run
    stopped at step 3 continues with the saved scale (a fresh 2^127 would skip step 4 too)."""
    assert 2.0**127 == 1.7014118346046923e38 and 2.0**-60 == 8.673617379884035e-19
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_cli(*SCALED, f"hydra.run.dir={straight}")
    assert [r["train/loss_scale"] for r in records(straight)] == EXPECTED_SCALES
    assert all(r["train/skipped_steps"] == 0 and math.isfinite(r["train/loss"]) for r in records(straight))
    run_cli(*SCALED, "trainer.stop_at_step=3", f"hydra.run.dir={split}")
    saved = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 3
    assert saved["grad_scaler"]["scale"] == 2.0**68 and saved["grad_scaler"]["_growth_tracker"] == 0
    run_cli(*SCALED, f"hydra.run.dir={split}")
    assert [r["train/loss_scale"] for r in records(split)] == EXPECTED_SCALES
    assert_bit_identical(final_weights(split), final_weights(straight))
    assert torch.load(split / "checkpoints" / "last.pt", weights_only=True)["grad_scaler"]["scale"] == 2.0**69


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast training needs a CUDA GPU")
def test_fp16_training_on_cuda_scales_skips_and_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        *SCALED,
        "trainer.device=cuda",
        "trainer.precision=fp16",
        "trainer.grad_scaler.enabled=auto",
        f"hydra.run.dir={run_dir}",
    )
    logged = records(run_dir)
    assert logged[0]["train/loss_scale"] <= 2.0**67  # the first step overflowed
    assert all(r["train/skipped_steps"] == 0 and math.isfinite(r["train/loss"]) for r in logged)
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["grad_scaler"]["scale"] == logged[-1]["train/loss_scale"]
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
