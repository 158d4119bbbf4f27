"""The training command end to end: outputs, chance-beating learning, exact resume, checkpoint settings
(atomic saves themselves: tests/unit/engine/test_checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from commands import TINY_RUN, run_cli
from omegaconf import OmegaConf
from paths import REPO_ROOT

from demt_exp.engine.checkpoint import load_checkpoint
from demt_exp.models.model import build_model

REPO = REPO_ROOT
TINY = [*TINY_RUN, "dataset.train.num_samples=16"]


@pytest.mark.slow
def test_run_folder_holds_config_metrics_history_and_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(*TINY, "trainer.steps=3", "trainer.eval_interval=2", "trainer.log_interval=1", f"hydra.run.dir={run_dir}")
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.trainer.steps == 3 and config.dataset.train.image_size == [32, 32]
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"semseg", "human_parts", "sal", "normals", "edge", "depth"}
    assert {"mIoU", "loss"} <= set(metrics["semseg"]) and "rmse" in metrics["depth"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sizes = records.pop(0)
    parameters = sum(p.numel() for p in build_model(config).parameters())  # the run's model (TINY: the small Swin)
    assert sizes["step"] == 0 and sizes["model/parameters"] == sizes["model/trainable_parameters"] == parameters
    train_steps = [r["step"] for r in records if "train/loss" in r]
    val_steps = [r["step"] for r in records if "val/semseg/mIoU" in r]
    assert train_steps == [1, 2, 3] and val_steps == [2, 3]
    assert records[0]["train/lr"] == pytest.approx(config.optimizer.lr)  # step 1 uses the base rate
    assert records[1]["train/lr"] == pytest.approx(config.optimizer.lr * (1 - 1 / 3) ** 0.9)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 3
    assert {"model", "optimizer", "scheduler", "rng", "config"} <= set(checkpoint)
    assert checkpoint["scheduler"]["last_epoch"] == 3
    # keep_last=1: the newest step file, and last.pt naming that same file (a hard link, not a copy).
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt", "step_00000003.pt"]
    assert (checkpoints / "last.pt").samefile(checkpoints / "step_00000003.pt")


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    common = [*TINY, "trainer.steps=4", "trainer.eval_interval=4", "dataset.train.num_samples=12"]
    run_cli(*common, f"hydra.run.dir={tmp_path / 'straight'}")
    run_cli(*common, "trainer.stop_at_step=2", f"hydra.run.dir={tmp_path / 'split'}")
    halfway = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert halfway["step"] == 2
    assert not (tmp_path / "split" / "metrics.json").exists()
    run_cli(*common, "trainer.resume=true", f"hydra.run.dir={tmp_path / 'split'}")
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert resumed["step"] == straight["step"] == 4
    for name, value in straight["model"].items():
        assert torch.allclose(resumed["model"][name].float(), value.float(), atol=1e-6), name
    # Three epochs of 3 batches were crossed: the resumed run really continued the data stream.
    moved = [n for n in straight["model"] if not torch.equal(straight["model"][n], halfway["model"][n])]
    assert moved


@pytest.mark.slow
def test_resume_from_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "last.pt"
    result = run_cli(*TINY, "trainer.steps=1", f"trainer.resume={missing}", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert str(missing) in result.stderr


@pytest.mark.slow
def test_short_default_run_is_clearly_better_than_chance(tmp_path: Path) -> None:
    """The default job's property on a shorter run: metrics far from the constant predictor's.

    Human-part mIoU is not asserted: at this size and length the small part regions stay
    at the background-only level (its loss does fall), see the README.
    """
    run_dir = tmp_path / "run"
    run_cli(
        "dataset.image_size=[40,40]",
        "dataset.val.num_samples=16",
        "trainer.steps=50",
        "trainer.eval_interval=50",
        "trainer.head_lr_mult=3",
        "logger.progress_bar=false",
        f"hydra.run.dir={run_dir}",
    )
    model = json.loads((run_dir / "metrics.json").read_text())
    chance = json.loads((run_dir / "baseline_metrics.json").read_text())
    # The default job's model and checkpoint settings (the image size changes no tensor): its folder stays small.
    assert "optimizer" not in load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file() and p.name != "last.pt") < 200e6
    assert model["semseg"]["mIoU"] > 2.5 * chance["semseg"]["mIoU"]
    assert model["sal"]["maxF"] > chance["sal"]["maxF"] + 25
    assert model["edge"]["pixel_maxF"] > chance["edge"]["pixel_maxF"] + 10
    assert model["normals"]["mean_angle"] < chance["normals"]["mean_angle"] - 15
    assert model["depth"]["rmse"] < 0.75 * chance["depth"]["rmse"]
    for task in ("semseg", "sal", "normals", "edge", "depth"):
        assert model[task]["loss"] < chance[task]["loss"], task


@pytest.mark.slow
def test_bf16_training_runs_and_stays_finite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(*TINY, "trainer.precision=bf16", "trainer.steps=2", "trainer.log_interval=1", f"hydra.run.dir={run_dir}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert records[0]["model/parameters"] > 0
    assert len(losses) == 2 and all(0 < loss < float("inf") for loss in losses)


@pytest.mark.slow
def test_training_logs_delta_m_against_configured_references(tmp_path: Path) -> None:
    references = tmp_path / "single_task.yaml"
    references.write_text("semseg: {mIoU: 20.0}\ndepth: {rmse: 1.5}\n")
    run_dir = tmp_path / "run"
    run_cli(
        *TINY,
        "trainer.steps=2",
        "trainer.eval_interval=2",
        f"eval.delta_m.references=[{references}]",
        "eval.delta_m.metrics=[semseg/mIoU,depth/rmse]",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    miou, rmse = metrics["semseg"]["mIoU"], metrics["depth"]["rmse"]
    expected = 100 * ((miou - 20.0) / 20.0 - (rmse - 1.5) / 1.5) / 2  # lower-is-better RMSE counts negatively
    assert metrics["multi_task"]["delta_m"] == pytest.approx(expected, rel=1e-9)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/multi_task/delta_m"] for r in records if "val/multi_task/delta_m" in r] == [pytest.approx(expected)]


@pytest.mark.slow
def test_a_quick_try_with_keep_last_0_writes_no_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(
        *TINY,
        "trainer.steps=2",
        "trainer.eval_interval=2",
        "trainer.checkpoint.keep_last=0",
        f"hydra.run.dir={run_dir}",
    )
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoints").exists()
    again = run_cli(
        *TINY,
        "trainer.steps=2",
        "trainer.eval_interval=2",
        "trainer.checkpoint.keep_last=0",
        f"hydra.run.dir={run_dir}",
    )
    assert f"starting {run_dir} fresh" in again.stdout  # nothing to continue: the same command starts over
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()].count(0) == 1


@pytest.mark.slow
def test_a_weights_only_checkpoint_is_a_third_of_the_size_and_resumes_with_a_warning(tmp_path: Path) -> None:
    full, light = tmp_path / "full", tmp_path / "light"
    common = [*TINY, "trainer.steps=2", "trainer.eval_interval=2", "trainer.stop_at_step=1"]
    run_cli(*common, f"hydra.run.dir={full}")  # TINY asks for the optimiser state
    run_cli(*common, "trainer.checkpoint.save_optimizer=false", f"hydra.run.dir={light}")
    full_size = (full / "checkpoints" / "last.pt").stat().st_size
    light_size = (light / "checkpoints" / "last.pt").stat().st_size
    assert "optimizer" not in load_checkpoint(light / "checkpoints" / "last.pt")
    assert 0.3 < light_size / full_size < 0.36  # AdamW keeps two moments per weight
    resumed = run_cli(*common[:-1], "trainer.checkpoint.save_optimizer=false", f"hydra.run.dir={light}")
    assert "holds no optimizer state (written with trainer.checkpoint.save_optimizer=false)" in resumed.stdout
    assert load_checkpoint(light / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.slow
def test_a_text_file_as_model_init_says_what_was_expected(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    result = run_cli(*TINY, "trainer.steps=1", f"model.init={notes}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: weights file {notes} cannot be read (")
    assert last.endswith("expected a file written by torch.save: a training checkpoint or a weights file")
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_cpu_routes_are_applied_by_the_engine_only_when_asked(tmp_path: Path) -> None:
    common = [*TINY, "trainer.steps=1", "trainer.eval_interval=1", "trainer.checkpoint.keep_last=0"]
    plain = run_cli(*common, f"hydra.run.dir={tmp_path / 'plain'}")
    assert "trainer.cpu_linear=onednn" not in plain.stdout and "trainer.cpu_allocator=reuse" not in plain.stdout
    routed = run_cli(
        *common, "trainer.cpu_linear=onednn", "trainer.cpu_allocator=reuse", f"hydra.run.dir={tmp_path / 'routed'}"
    )
    assert "trainer.cpu_linear=onednn: fp32 linear layers as oneDNN 1x1 convolutions (" in routed.stdout
    assert "trainer.cpu_allocator=reuse: freed CPU memory stays in the heap" in routed.stdout
    first = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    second = json.loads((tmp_path / "routed" / "metrics.json").read_text())
    for task, values in first.items():  # the same function, computed another way: equal to fp32 accuracy
        assert second[task] == pytest.approx(values, rel=1e-3, abs=1e-3), task
