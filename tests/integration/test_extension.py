"""A user's own decoder and data set (tests/fixtures/extension: a package and a config folder) through the real
commands, without touching demt_exp: training with W&B, resume, DDP under torchrun, evaluate, predict and
compare; a component that breaks the contract is named with what it returned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from commands import SMALL_SWIN, logged_steps, run_cli, run_module
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
    a depth per class, colours that tell the classes apart."""
    rng = np.random.default_rng(0)
    for sub in ("images", "semseg", "depth"):
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
        "dataset=folder_scenes",
        f"dataset.root={data}",
        "tasks.names=[semseg,depth]",
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
    assert "my_ext.decoder.MixDecoder" in stored and "my_ext.folder.FolderScenes" in stored
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # the W&B run file, one run across the resume
    final = json.loads((run / "metrics.json").read_text())
    assert set(final) >= {"semseg", "depth"}

    checkpoint = run / "checkpoints" / "last.pt"
    evaluated = tmp_path / "eval"
    run_module("demt_exp.evaluate", f"checkpoint={checkpoint}", SEARCHPATH, f"hydra.run.dir={evaluated}", env=ENV)
    scores = json.loads((evaluated / "metrics.json").read_text())
    for task, metric in (("semseg", "mIoU"), ("depth", "rmse")):
        assert scores[task][metric] == pytest.approx(final[task][metric], abs=1e-6)

    out = tmp_path / "predictions"
    run_module("demt_exp.predict", f"checkpoint={checkpoint}", SEARCHPATH, "input=null", f"out={out}", env=ENV)
    for task in ("semseg", "depth"):
        assert sorted(path.stem for path in (out / task).glob("scene*.png")) == [f"scene{i:02d}" for i in range(8, 12)]

    table = json.loads(run_module("demt_exp.compare", str(run), "--format", "json", "--no-plot").stdout)
    assert table["rows"][0]["metrics"]["semseg/mIoU"]["values"] == [pytest.approx(final["semseg"]["mIoU"])]


def test_a_users_components_train_under_torchrun(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "demt_exp"]
    env = {**os.environ, **ENV}
    args = [*user_job(data), "trainer.steps=2", f"hydra.run.dir={run}"]
    done = subprocess.run([*command, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["dist/world_size"] == 2 and (run / "metrics.json").is_file()


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
