"""Trackers in real training runs: logger=none and logger=wandb (offline), read back from the files
they write. (The trackers in-process: unit/tracking/test_tracking.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from commands import TINY_RUN, run_cli
from PIL import Image

from demt_exp.tracking import read_history
from demt_exp.tracking.wandb_file import read_wandb_run, run_files

# No WANDB_MODE: offline must be the default. An unreachable server in case anything tried to upload.
OFFLINE = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_logger_none_writes_metrics_json_but_no_history(tmp_path: Path) -> None:
    run_cli(*TINY_RUN, "logger=none", "trainer.steps=1", "trainer.eval_interval=1", f"hydra.run.dir={tmp_path}")
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "wandb").exists()
    assert "semseg" in json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_wandb_offline_run_holds_config_history_panels_and_a_resume_continues_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    common = [
        *TINY_RUN,
        "logger=wandb",
        "logger.wandb.panels=2",
        "logger.wandb.tags=[ablation]",
        "trainer.head_lr_mult=10",
        "trainer.steps=2",
        "trainer.eval_interval=1",
        "trainer.log_interval=1",
        f"hydra.run.dir={tmp_path}",
    ]
    run_cli(*common, "trainer.stop_at_step=1", env=OFFLINE)
    first_id = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["wandb_run_id"]
    run_cli(*common, "trainer.resume=true", env=OFFLINE)

    files = run_files(tmp_path / "wandb")
    assert len(files) == 2, files  # one per start, both of the same run
    assert all(f.parent.name.startswith("offline-run-") for f in files)  # no WANDB_MODE: offline
    first, second = (read_wandb_run(f) for f in files)
    assert first.run_id == second.run_id == first_id
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["wandb_run_id"] == first_id
    assert first.tags == ["ablation"] and first.job_type == "train" and first.project == "demt_exp"
    assert first.config["trainer"]["steps"] == 2 and first.config["logger"]["wandb"]["panels"] == 2
    assert first.config["tasks"]["names"] == ["semseg", "human_parts", "sal", "normals", "edge", "depth"]
    # The name is the job's overrides, less those that only steer stopping and resuming.
    assert second.name == first.name and "trainer.steps=2" in first.name and "resume" not in second.name

    # Every numeric record of metrics.jsonl is in the W&B history at the same trainer/step, same value.
    logged = [row for run in (first, second) for row in run.history]
    for record in read_history(tmp_path / "metrics.jsonl"):
        step = record.pop("step")
        rows = [row for row in logged if row.get("trainer/step") == step and set(record) <= set(row)]
        assert rows, f"no W&B history row of step {step} holds {sorted(record)}"
        assert all(rows[-1][key] == pytest.approx(value) for key, value in record.items())
    keys = set().union(*logged)
    first_train = next(r for r in read_history(tmp_path / "metrics.jsonl") if "train/loss" in r)
    assert first_train["step"] == 1 and first_train["train/lr/backbone"] == pytest.approx(1e-3)  # adamw's lr
    assert first_train["train/lr/head"] == pytest.approx(10 * 1e-3)  # trainer.head_lr_mult=10
    assert {
        "val/semseg/mIoU",
        "train/semseg/loss",
        "train/lr/backbone",
        "train/lr/head",
        "train/images_per_s",
        "model/parameters",
    } <= keys

    # Panels: two images per evaluation, real PNG files of the run, one per val image.
    panel_rows = [row for row in logged if "val/panels/filenames" in row]
    assert [row["trainer/step"] for row in panel_rows] == [1, 2]
    for row in panel_rows:
        assert len(row["val/panels/filenames"]) == 2
        for name in row["val/panels/filenames"]:
            found = list((tmp_path / "wandb").glob(f"*/files/{name}"))
            assert found, name
            with Image.open(found[0]) as image:
                # 32 px tiles are enlarged 4x to 128; each of the 2 rows (prediction above ground truth)
                # has a 14 px title and a 2 px gap: 2 * (128 + 14 + 2) - 2. Columns: input + 6 tasks.
                assert image.size == (7 * (128 + 2) - 2, 2 * (128 + 14 + 2) - 2)
