"""A user's own decoder, data set and task (tests/fixtures/extension: a package and a config folder) through the
real commands, without touching demt_exp: training with W&B, resume, DDP under torchrun (training and
evaluate), evaluate, predict, compare and an Optuna search on the user's metric run from the user's own
folder; a component that breaks the contract is named with what it returned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from commands import SMALL_SWIN, logged_steps, run_cli, run_module
from omegaconf import OmegaConf
from paths import REPO_ROOT
from PIL import Image

EXTENSION = REPO_ROOT / "tests" / "fixtures" / "extension"
# The user's package on the path and their config folder on Hydra's search path; offline W&B that cannot upload.
ENV = {
    "PYTHONPATH": os.pathsep.join([str(EXTENSION), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    "OMP_NUM_THREADS": "1",
    "WANDB_BASE_URL": "http://127.0.0.1:9",
    "WANDB_SILENT": "true",
}
SEARCHPATH = f"hydra.searchpath=[file://{EXTENSION / 'conf'}]"

pytestmark = pytest.mark.slow


def write_folder(root: Path) -> Path:
    """12 scenes of 32 x 32 in the folder layout my_ext.folder.FolderScenes reads: four quadrant classes,
    a depth and a shading per class, colours that tell the classes apart; the first row's shading unknown."""
    rng = np.random.default_rng(0)
    for sub in ("images", "semseg", "depth", "shading"):
        (root / sub).mkdir(parents=True)
    ids = [f"scene{i:02d}" for i in range(12)]
    for name in ids:
        label = np.zeros((32, 32), np.uint8)
        label[:, 16:] += 1
        label[16:, :] += 2
        rgb = label[..., None].astype(np.int64) * 60 + rng.integers(0, 40, (32, 32, 3))
        Image.fromarray(rgb.astype(np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(label).save(root / "semseg" / f"{name}.png")
        Image.fromarray((1000 + 500 * label.astype(np.uint16)).astype(np.uint16)).save(root / "depth" / f"{name}.png")
        shading = (40 + 50 * label).astype(np.uint8)
        shading[0] = 0
        Image.fromarray(shading).save(root / "shading" / f"{name}.png")
    (root / "train.txt").write_text("\n".join(ids[:8]))
    (root / "val.txt").write_text("\n".join(ids[8:]))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder_scenes"))


def user_job(data: Path) -> list[str]:
    return [
        SEARCHPATH,
        "decoder=mix",
        "dataset=folder_scenes",  # with its tasks: semseg, depth and the user's shading
        f"dataset.root={data}",
        *SMALL_SWIN,
        "encoder.dim=32",
        "trainer.batch_size=4",
        "trainer.eval_interval=2",
        "trainer.log_interval=1",
        "trainer.checkpoint.save_optimizer=true",
        "logger.progress_bar=false",
    ]


def test_a_users_decoder_and_data_set_train_resume_evaluate_predict_and_compare(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    job = [*user_job(data), "logger=wandb", f"hydra.run.dir={run}"]
    run_cli(*job, "trainer.steps=4", "trainer.stop_at_step=2", env=ENV)
    run_cli(*job, "trainer.steps=4", "trainer.resume=true", env=ENV)
    assert logged_steps(run) == [1, 2, 3, 4]
    stored = (run / ".hydra" / "config.yaml").read_text()
    assert all(f"my_ext.{name}" in stored for name in ("decoder.MixDecoder", "folder.FolderScenes", "tasks.Shading"))
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B run file, one run across the resume
    final = json.loads((run / "metrics.json").read_text())
    assert set(final) >= {"semseg", "depth", "shading"} and set(final["shading"]) == {"mae", "within_0.1", "loss"}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/shading/loss" in record for record in logged)

    checkpoint = run / "checkpoints" / "last.pt"
    evaluated = tmp_path / "eval"
    run_module("demt_exp.evaluate", f"checkpoint={checkpoint}", SEARCHPATH, f"hydra.run.dir={evaluated}", env=ENV)
    scores = json.loads((evaluated / "metrics.json").read_text())
    for task, metric in (("semseg", "mIoU"), ("depth", "rmse"), ("shading", "mae")):
        assert scores[task][metric] == pytest.approx(final[task][metric], abs=1e-6)

    out = tmp_path / "predictions"
    run_module("demt_exp.predict", f"checkpoint={checkpoint}", SEARCHPATH, "input=null", f"out={out}", env=ENV)
    for task in ("semseg", "depth", "shading"):
        assert sorted(path.stem for path in (out / task).glob("scene*.png")) == [f"scene{i:02d}" for i in range(8, 12)]
    shading = np.load(out / "shading" / "scene08.npy")  # the task's raw values beside its picture
    assert shading.shape == (32, 32) and shading.dtype == np.float32 and np.isfinite(shading).all()

    table = json.loads(run_module("demt_exp.compare", str(run), "--format", "json", "--no-plot").stdout)
    for metric in ("semseg/mIoU", "shading/mae"):
        task, name = metric.split("/")
        assert table["rows"][0]["metrics"][metric]["values"] == [pytest.approx(final[task][name])]


def torchrun(module: str, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module]
    env = {**os.environ, **ENV}
    done = subprocess.run([*command, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_users_components_train_and_evaluate_under_torchrun(data: Path, tmp_path: Path) -> None:
    run, evaluated = tmp_path / "ddp", tmp_path / "ddp_eval"
    torchrun("demt_exp", *user_job(data), "trainer.steps=2", f"hydra.run.dir={run}")
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["dist/world_size"] == 2
    final = json.loads((run / "metrics.json").read_text())
    torchrun(
        "demt_exp.evaluate", f"checkpoint={run / 'checkpoints' / 'last.pt'}", SEARCHPATH, f"hydra.run.dir={evaluated}"
    )
    scores = json.loads((evaluated / "metrics.json").read_text())  # the 4 val images split over 2 processes
    for task, metric in (("semseg", "mIoU"), ("depth", "rmse"), ("shading", "mae"), ("shading", "within_0.1")):
        assert scores[task][metric] == pytest.approx(final[task][metric], abs=1e-6)


def test_an_optuna_search_on_the_users_metric_from_the_users_own_folder(data: Path, tmp_path: Path) -> None:
    """Run where a user works (not in this repository: the installed package finds its sweeper), minimising the
    user's shading/mae and maximising mIoU over the user's loss option; compare, without the user's package,
    takes the directions from the search's storage."""
    root = tmp_path / "search"
    args = [*user_job(data), "trainer.steps=2", "hydra/sweeper=optuna", "hydra.sweeper.sampler.seed=0"]
    args += ["hydra.sweeper.n_trials=2", "objective=[shading/mae,semseg/mIoU]", f"hydra.sweep.dir={root}"]
    args += ["tasks.loss.options.shading.beta=interval(0.01,0.5)"]
    env = {**os.environ, **ENV}
    done = subprocess.run(
        [sys.executable, "-m", "demt_exp", "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    for trial in study.trials:
        final = json.loads((root / str(trial.number) / "metrics.json").read_text())
        assert trial.values == pytest.approx([final["shading"]["mae"], final["semseg"]["mIoU"]])
        config = OmegaConf.load(root / str(trial.number) / ".hydra" / "config.yaml")
        assert config.tasks.loss.options.shading.beta == pytest.approx(trial.params["tasks.loss.options.shading.beta"])
    assert len({trial.params["tasks.loss.options.shading.beta"] for trial in study.trials}) == 2

    # compare reads files and needs no user code: it runs without the user's package on the path
    table = run_module("demt_exp.compare", str(root), "--no-plot", "--metrics", "shading/mae", "semseg/mIoU")
    assert "objective shading/mae (min), semseg/mIoU (max)" in table.stderr
    (mae0, miou0), (mae1, miou1) = (trial.values for trial in study.trials)
    beaten = [mae1 <= mae0 and miou1 >= miou0, mae0 <= mae1 and miou0 >= miou1]  # (values differ: no ties here)
    marks = [line.split(" | ")[0].strip("| ") for line in table.stdout.splitlines()[2:4]]
    assert marks == ["" if lost else "front" for lost in beaten]


def test_a_decoder_that_breaks_the_contract_is_named_with_what_it_returned(data: Path, tmp_path: Path) -> None:
    done = run_cli(*user_job(data), "decoder.broken=true", f"hydra.run.dir={tmp_path / 'broken'}", env=ENV, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "decoder my_ext.decoder.MixDecoder: 'semseg' is a torch.float32 tensor of shape (1, 16, 8, 8)" in error
    assert "expected (1, 32, h, w)" in error


def test_a_data_set_config_without_its_size_is_one_error_line(data: Path, tmp_path: Path) -> None:
    done = run_cli(*user_job(data), "~dataset.image_size", f"hydra.run.dir={tmp_path / 'nosize'}", env=ENV, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: dataset.image_size is missing; a dataset config gives name, num_semseg_classes" in done.stderr
