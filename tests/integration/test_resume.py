"""Runs that survive: signals, kill -9 (also mid-save), loader workers, DDP ranks, changed configs.

Every comparison is bit for bit against an uninterrupted run of the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from commands import (
    SMALL_SWIN,
    TINY_RUN,
    assert_bit_identical,
    final_weights,
    logged_steps,
    run_cli,
    start_cli,
    wait_until,
)
from paths import REPO_ROOT

from demt_exp.data.example_nyud import write_fake_nyud

TINY = [*TINY_RUN, "dataset.train.num_samples=12", "trainer.log_interval=1"]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


SIGNAL_RUN = [*TINY, "trainer.steps=14", "trainer.eval_interval=14", "trainer.checkpoint.interval=5"]


@pytest.fixture(scope="module")
def straight_signal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run both signal cases are held against (one run, not one per signal)."""
    straight = tmp_path_factory.mktemp("signal") / "straight"
    run_cli(*SIGNAL_RUN, f"hydra.run.dir={straight}")
    return straight


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_the_rerun_continues_exactly(
    tmp_path: Path, signum: int, straight_signal_run: Path
) -> None:
    common = SIGNAL_RUN
    straight, split = straight_signal_run, tmp_path / "split"
    job = start_cli(*common, f"hydra.run.dir={split}", log=tmp_path / "split.log")
    wait_until(lambda: max(logged_steps(split), default=0) >= 3 or job.poll() is not None, 300, "step 3 is logged")
    job.send_signal(signum)
    assert job.wait(timeout=300) == 128 + signum
    stop = [r for r in history(split) if "stop/signal" in r]
    assert len(stop) == 1 and stop[0]["stop/signal"] == signum
    stopped_at = stop[0]["step"]
    assert 3 <= stopped_at < 14
    assert torch.load(split / "checkpoints" / "last.pt", weights_only=True)["step"] == stopped_at
    assert (
        f"stopped after step {stopped_at} on {signal.Signals(signum).name}: checkpoint {split}/checkpoints/last.pt; "
        f"the same command with hydra.run.dir={split} continues from it"
    ) in (tmp_path / "split.log").read_text()
    again = run_cli(*common, f"hydra.run.dir={split}")  # the same command again: trainer.resume=auto continues it
    assert f"continuing {split} from step {stopped_at} ({split}/checkpoints/last.pt)" in again.stdout
    assert_bit_identical(final_weights(split), final_weights(straight))
    assert logged_steps(split) == list(range(1, 15))  # each step once
    records = [(r["step"], tuple(sorted(r))) for r in history(split)]
    assert len(records) == len(set(records))  # no record of any step written twice (step 0 included)


@pytest.mark.slow
def test_kill_9_with_loader_workers_and_augmentation_resumes_bit_identically(tmp_path: Path) -> None:
    """NYUD fake data through the official augmentation with 2 workers. The resumed loader hands the
    samples to other workers than the uninterrupted one did (its round-robin restarts mid-epoch)."""
    root = write_fake_nyud(tmp_path / "NYUDv2", "demt", n_train=6, n_val=2, size=(40, 52))
    common = [
        *SMALL_SWIN,
        "dataset=nyud",
        f"dataset.root={root}",
        "dataset.image_size=[32,40]",
        "encoder.dim=32",
        "trainer.batch_size=2",
        "trainer.steps=9",
        "trainer.eval_interval=9",
        "trainer.log_interval=1",
        "trainer.checkpoint.interval=2",
        "trainer.checkpoint.keep_last=2",
        "logger.progress_bar=false",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli(*common, "trainer.num_workers=2", f"hydra.run.dir={straight}")
    job = start_cli(*common, "trainer.num_workers=2", f"hydra.run.dir={killed}")
    # polled every 10 ms: killed well within step 6, before its checkpoint (a 0.2 s poll could miss it under load)
    logged = lambda: max(logged_steps(killed), default=0) >= 5 or job.poll() is not None  # noqa: E731
    wait_until(logged, 300, "step 5 is logged", poll=0.01)
    job.kill()
    job.wait(timeout=60)
    checkpoints = killed / "checkpoints"
    saved = torch.load(checkpoints / "last.pt", weights_only=True)["step"]
    assert saved < max(logged_steps(killed))  # records of steps after the checkpoint exist and must go
    (checkpoints / f".step_{saved + 2:08d}.pt.x1y2z3.tmp").write_bytes(b"what kill -9 leaves mid-save")
    run_cli(*common, "trainer.num_workers=2", f"hydra.run.dir={killed}")
    assert_bit_identical(final_weights(killed), final_weights(straight))
    assert logged_steps(killed) == list(range(1, 10))
    assert logged_steps(killed, "val/semseg/mIoU") == [9]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt", "step_00000008.pt", "step_00000009.pt"]


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "demt_exp", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_ranks_save_and_restore_their_own_rng_states(tmp_path: Path) -> None:
    """Drop path draws per rank: a resume that gave every rank rank 0's stream would differ."""
    common = [
        *TINY,
        "trainer.steps=4",
        "trainer.eval_interval=4",
        "tasks=nyud",
        "dataset.num_semseg_classes=5",
        "backbone.drop_path_rate=0.3",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for args in (
        [f"hydra.run.dir={straight}"],
        [f"hydra.run.dir={split}", "trainer.stop_at_step=2"],
        [f"hydra.run.dir={split}"],
    ):
        done = torchrun(*common, *args)
        assert done.returncode == 0, done.stderr[-3000:]
    halfway = (
        torch.load(split / "checkpoints" / "step_00000002.pt", weights_only=True)
        if (split / "checkpoints" / "step_00000002.pt").exists()
        else None
    )
    final = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert final["world_size"] == 2 and len(final["rng"]) == 2
    assert not torch.equal(final["rng"][0]["torch"], final["rng"][1]["torch"])
    assert halfway is None or halfway["step"] == 2
    assert_bit_identical(final_weights(split), final_weights(straight))


@pytest.mark.slow
def test_resume_refuses_another_config_by_key_and_allows_a_named_lr_change(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [*TINY, "trainer.steps=2", "trainer.eval_interval=2", f"hydra.run.dir={run_dir}"]
    run_cli(*common, "trainer.stop_at_step=1")
    refused = run_cli(*common, "tasks.names=[semseg,depth]", "optimizer.lr=0.0005", check=False)
    assert refused.returncode != 0
    assert (
        "tasks.names: checkpoint" in refused.stderr
        and "optimizer.lr: checkpoint 0.001, config 0.0005" in refused.stderr
    )
    lr_only = run_cli(*common, "optimizer.lr=0.0005", check=False)
    assert lr_only.returncode != 0 and "trainer.resume_allow_changes" in lr_only.stderr
    run_cli(*common, "optimizer.lr=0.0005", "trainer.resume_allow_changes=[optimizer.lr]")
    step2 = [r for r in history(run_dir) if r["step"] == 2 and "train/lr" in r]
    assert step2[0]["train/lr"] == pytest.approx(0.0005 * (1 - 1 / 2) ** 0.9)
    fresh = run_cli(*common, "trainer.resume=false", check=False)
    assert fresh.returncode != 0 and f"run folder {run_dir} already holds a run" in fresh.stderr


@pytest.mark.slow
def test_a_non_finite_loss_stops_naming_step_and_task_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [*TINY, "optimizer=sgd", "optimizer.lr=1000", "trainer.steps=30", f"hydra.run.dir={run_dir}"]
    result = run_cli(*common, "trainer.eval_interval=2", check=False)
    assert result.returncode != 0
    message = result.stderr[result.stderr.index("non-finite loss at step") :]
    bad_step = int(message.split()[4])
    assert "in task(s)" in message and "the last checkpoint" in message
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] < bad_step
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    assert max(logged_steps(run_dir)) < bad_step  # the bad step itself was not applied or logged
    skipping = tmp_path / "skip"  # the same steps, evaluated less often: only the skip count matters here
    run_cli(*common[:-1], "trainer.eval_interval=15", "trainer.nonfinite=skip", f"hydra.run.dir={skipping}")
    last = [r for r in history(skipping) if "train/skipped_steps" in r][-1]
    assert last["step"] == 30 and last["train/skipped_steps"] >= 1
    final = torch.load(skipping / "checkpoints" / "last.pt", weights_only=True)
    assert final["skipped_steps"] == last["train/skipped_steps"]


@pytest.mark.slow
def test_the_other_rank_exits_within_the_timeout_when_one_dies(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "trainer.steps=500",
        "trainer.eval_interval=500",
        "trainer.dist_timeout_s=30",
        f"hydra.run.dir={run_dir}",
    ]
    ranks = [
        start_cli(
            *args,
            env={
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            },
        )
        for r in (0, 1)
    ]
    wait_until(lambda: max(logged_steps(run_dir), default=0) >= 2 or ranks[0].poll() is not None, 300, "step 2")
    ranks[1].kill()
    killed_at = time.monotonic()
    code = ranks[0].wait(timeout=120)
    assert code != 0
    assert time.monotonic() - killed_at < 90


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """The first Ctrl-C asks for "this step, then save"; a second one (later than the same keypress seen
    twice) stops mid-step: no traceback, exit 130, and the checkpoint on disk is the last whole one."""
    run_dir = tmp_path / "run"
    slow_steps = [
        *TINY,
        "dataset.image_size=[448,448]",  # steps of the small Swin (TINY_RUN) that last well over 1.5 s
        "trainer.steps=50",
        "trainer.eval_interval=50",
        "trainer.checkpoint.interval=1",
        f"hydra.run.dir={run_dir}",
    ]
    job = start_cli(*slow_steps, log=tmp_path / "run.log")
    wait_until(lambda: (run_dir / "checkpoints" / "last.pt").is_file() or job.poll() is not None, 300, "a checkpoint")
    job.send_signal(signal.SIGINT)
    time.sleep(1.5)  # > SIGINT_REPEAT_S: a second keypress, not the first one forwarded again
    job.send_signal(signal.SIGINT)
    assert job.wait(timeout=300) == 130
    output = (tmp_path / "run.log").read_text()
    assert "aborted by Ctrl-C; nothing in" in output and "Traceback" not in output
    checkpoints = run_dir / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp"))  # an abort mid-save removes its temporary file
    saved = torch.load(checkpoints / "last.pt", weights_only=True)["step"]
    assert saved >= 1 and not (run_dir / "metrics.json").exists()
    again = run_cli(*slow_steps, f"trainer.stop_at_step={saved + 1}")
    assert f"continuing {run_dir} from step {saved} ({checkpoints}/last.pt)" in again.stdout


@pytest.mark.slow
def test_stop_at_step_reruns_end_one_way(tmp_path: Path) -> None:
    """The same command three times: stops at 2 (no final metrics), continues to the last step (final
    metrics.json and table), then says there is nothing left to train and reports again."""
    run_dir = tmp_path / "run"
    command = [
        *TINY,
        "trainer.steps=4",
        "trainer.eval_interval=4",
        "trainer.stop_at_step=2",
        f"hydra.run.dir={run_dir}",
    ]
    first = run_cli(*command)
    assert (
        f"stopped at step 2 of 4 as trainer.stop_at_step asks; the same command continues {run_dir} to step 4"
        in first.stdout
    )
    assert not (run_dir / "metrics.json").exists() and "final validation metrics" not in first.stdout
    second = run_cli(*command)
    assert f"continuing {run_dir} from step 2" in second.stdout
    assert "final validation metrics at step 4" in second.stdout and "stopped at step" not in second.stdout
    final = json.loads((run_dir / "metrics.json").read_text())
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    (run_dir / "metrics.json").unlink()
    third = run_cli(*command)
    assert f"nothing left to train: {run_dir} is at its last step (4)" in third.stdout
    assert "final validation metrics at step 4" in third.stdout
    assert json.loads((run_dir / "metrics.json").read_text()) == final  # the same checkpoint, scored again
    assert logged_steps(run_dir) == [1, 2, 3, 4]  # each step once over the three runs
