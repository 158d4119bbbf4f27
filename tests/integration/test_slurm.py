"""Launching through a real SLURM (munged + slurmctld + slurmd on this machine) with submitit.

The cluster is started once for this module by tests/helpers/slurm/local_cluster.py and stopped after.
Where it cannot run (no root, no package archive) the tests skip with the reason, except in CI
(CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands import (
    TINY_RUN,
    assert_bit_identical,
    final_weights,
    logged_steps,
    run_cli,
    wait_until,
)
from omegaconf import OmegaConf
from paths import HELPERS_DIR, REPO_ROOT

sys.path.insert(0, str(HELPERS_DIR / "slurm"))
from local_cluster import Cluster, ClusterUnavailable, start, stop  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TINY = [*TINY_RUN, "dataset.train.num_samples=12", "trainer.log_interval=1"]
# CPU-only test node: no GPUs to ask for, one CPU per task.
# Runs compared bit for bit must reduce in the same order: the same number of threads everywhere.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
CPU_JOB = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=30",
    "hydra.launcher.signal_delay_s=30",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("slurm")
    try:
        started = start(root)
    except ClusterUnavailable as why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM tests, but the cluster did not start: {why}")
        pytest.skip(f"no SLURM here: {why}")
    yield started
    stop(root)


def sweep(cluster: Cluster, sweep_dir: Path, *overrides: str, tasks: int = 1, wait: bool = True) -> subprocess.Popen:
    """`python -m demt_exp -m ... hydra/launcher=slurm`, as a user submits a sweep."""
    command = [
        sys.executable,
        "-m",
        "demt_exp",
        "-m",
        *overrides,
        *CPU_JOB,
        f"hydra.launcher.tasks_per_node={tasks}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    log = open(sweep_dir.parent / f"{sweep_dir.name}.launcher.log", "w")  # noqa: SIM115 - owned by the child
    env = {**cluster.env(), **ONE_THREAD}  # sbatch passes the environment on to the job
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if wait:
        code = process.wait(timeout=900)
        assert code == 0, (sweep_dir.parent / f"{sweep_dir.name}.launcher.log").read_text()[-4000:]
    return process


def job_ids(cluster: Cluster) -> list[str]:
    """Running or pending jobs, as `<array job>_<task>` where the job is an array task."""
    out = cluster.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")
    return [line.split()[0] for line in out if line.strip()]


def test_a_sweep_runs_one_job_per_combination_and_fills_each_run_folder(cluster: Cluster, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep(cluster, sweep_dir, *TINY, "trainer.steps=2", "trainer.eval_interval=2", "trainer.seed=0,1")
    for job in ("0", "1"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert {"semseg", "depth"} <= set(metrics)
        assert logged_steps(sweep_dir / job) == [1, 2]
    assert [OmegaConf.load(sweep_dir / j / "config.yaml").trainer.seed for j in ("0", "1")] == [0, 1]
    logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # two SLURM jobs (an array of two), each with submitit's log
    assert all("Starting with JobEnvironment" in p.read_text() for p in logs)


def test_one_job_with_two_tasks_trains_two_gloo_ranks_like_torchrun(cluster: Cluster, tmp_path: Path) -> None:
    common = [*TINY, "trainer.steps=3", "trainer.eval_interval=3", "tasks=nyud", "dataset.num_semseg_classes=5"]
    sweep_dir = tmp_path / "ddp"
    sweep(cluster, sweep_dir, *common, tasks=2)
    record = json.loads((sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["dist/world_size"] == 2
    reference = tmp_path / "torchrun"
    env = {**os.environ, **ONE_THREAD}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "demt_exp",
            *common,
            f"hydra.run.dir={reference}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_bit_identical(final_weights(sweep_dir / "0"), final_weights(reference))


def test_a_preempted_job_is_requeued_and_ends_with_the_uninterrupted_weights(cluster: Cluster, tmp_path: Path) -> None:
    """Twice: the pre-timeout signal (USR2, handed to submitit, which requeues), then `scontrol
    requeue` (SIGTERM, SLURM requeues). Each time the job resumes its own run folder."""
    common = [*TINY, "trainer.steps=16", "trainer.eval_interval=16", "trainer.checkpoint.interval=4"]
    sweep_dir = tmp_path / "preempted"
    launcher = sweep(cluster, sweep_dir, *common, wait=False)
    run_dir = sweep_dir / "0"
    wait_until(lambda: max(logged_steps(run_dir), default=0) >= 3, 600, "the job logs step 3")
    (job,) = job_ids(cluster)
    cluster.run("scancel", "--signal=USR2", job)
    wait_until(lambda: any("stop/signal" in line for line in _lines(run_dir)), 300, "the job stops on USR2")
    release_requeued(cluster, job)
    first_stop = max(_stops(run_dir))
    wait_until(lambda: max(logged_steps(run_dir), default=0) >= first_stop + 3, 600, "the requeued job trains on")
    (job,) = job_ids(cluster)
    cluster.run("scontrol", "requeue", job)
    release_requeued(cluster, job)
    assert launcher.wait(timeout=900) == 0, (tmp_path / "preempted.launcher.log").read_text()[-4000:]
    assert len(_stops(run_dir)) == 2
    assert logged_steps(run_dir) == list(range(1, 17))  # each step once, in the same folder
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    straight = tmp_path / "straight"
    run_cli(*common, f"hydra.run.dir={straight}", env=ONE_THREAD)
    assert_bit_identical(final_weights(run_dir), final_weights(straight))


def release_requeued(cluster: Cluster, job: str) -> None:
    """SLURM holds a requeued job for 120 s (pending, reason BeginTime) before it may start again;
    once the job is pending, let it start now, as an admin would, so the test does not wait."""

    def pending() -> bool:
        state = cluster.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()
        return state == "PENDING"

    wait_until(pending, 300, f"job {job} is pending again after its requeue")
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def _lines(run_dir: Path) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def _stops(run_dir: Path) -> list[int]:
    stops = []
    for line in _lines(run_dir):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "stop/signal" in record:
            stops.append(int(record["step"]))
    return stops


def test_an_optuna_search_submits_its_trials_as_slurm_jobs(cluster: Cluster, tmp_path: Path) -> None:
    """hydra/sweeper=optuna on hydra/launcher=slurm: two trials submitted together, their values back in the
    study stored in the multirun folder."""
    import optuna

    sweep_dir = tmp_path / "search"
    search = ["hydra/sweeper=optuna", "objective=semseg/mIoU", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    sweep(cluster, sweep_dir, *search, "optimizer.lr=interval(0.0001,0.001)", *TINY, "trainer.steps=1")
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    mious = [json.loads((sweep_dir / str(job) / "metrics.json").read_text())["semseg"]["mIoU"] for job in (0, 1)]
    assert [trial.value for trial in study.trials] == mious
    assert len(sorted((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2  # two SLURM jobs
