"""DDP on CPU (gloo, 2 processes): one step equals a single process averaging the half-batch gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from hydra.utils import instantiate
from torch.utils.data import default_collate

from demt_exp.models.model import build_model
from demt_exp.optim import build_optimizer
from demt_exp.train import build_loss, seed_everything

REPO = Path(__file__).resolve().parent.parent
TINY = [
    *TINY_RUN,
    "tasks=nyud",
    "dataset.num_semseg_classes=5",
    "dataset.train.num_samples=8",
    "backbone.drop_path_rate=0.0",  # no random masks, so one process can replay both ranks exactly
    "optimizer=sgd",
    "optimizer.lr=0.01",  # a step of ~0.1 on the largest weights keeps float32 noise far below 1e-5
    "trainer.steps=10",
]


def torchrun(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def reference_step(cfg, halves: list[list[int]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Single process: gradient of each half-batch, averaged, then one optimiser step.

    Returns the parameters before and after the step.
    """
    seed_everything(int(cfg.trainer.seed))
    model = build_model(cfg).train()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(cfg.optimizer, model)
    loss_fn = build_loss(cfg.tasks)
    dataset = instantiate(cfg.dataset.train)
    grads: dict[str, torch.Tensor] = {}
    for indices in halves:
        batch = default_collate([dataset[i] for i in indices])
        model.zero_grad()
        loss_fn(model(batch["image"]), batch)[0].backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                grads[name] = grads.get(name, 0) + param.grad / len(halves)
    for name, param in model.named_parameters():
        param.grad = grads.get(name)
    optimizer.step()
    return initial, {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["decoder.attention=global", "decoder.kv_stride=2"],
        ["encoder=degmix", "decoder=degmix"],
        ["encoder=degmix", "decoder=degmix", "encoder.projection=linear", "decoder.attention=global"],
        ["encoder=concat", "decoder=fcn"],
        ["model.freeze_backbone=true"],
    ],
    ids=["demt", "demt-global", "degmix", "degmix-linear-global", "fcn-baseline", "frozen-backbone"],
)
def test_ddp_step_equals_gradient_average_of_half_batches(tmp_path: Path, compose, variant: list[str]) -> None:
    # The baselines' concat encoder has no width of its own to shrink.
    overrides = [o for o in TINY if not ("encoder=concat" in variant and o.startswith("encoder.dim"))] + variant
    result = torchrun(str(REPO / "tests" / "ddp_worker.py"), str(tmp_path), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert len(rank0["indices"]) == 2 and set(rank0["indices"]).isdisjoint(rank1["indices"])
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), name
    initial, expected = reference_step(compose(overrides), [rank0["indices"], rank1["indices"]])
    assert rank0["params"].keys() == expected.keys()
    for name, value in rank0["params"].items():
        assert torch.allclose(value, expected[name], atol=1e-5, rtol=0), name
    trainable = [n for n in expected if "backbone" not in n or "model.freeze_backbone=true" not in overrides]
    moved = [n for n in expected if not torch.allclose(expected[n], initial[n], atol=1e-7)]
    assert set(moved) <= set(trainable)
    assert len(moved) > 0.9 * len(trainable)  # the step really updated (almost) every trainable parameter


@pytest.mark.slow
def test_training_command_under_torchrun_writes_one_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = TINY + ["trainer.steps=2", "trainer.eval_interval=2", "trainer.log_interval=1", f"hydra.run.dir={run_dir}"]
    result = torchrun("-m", "demt_exp", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"semseg", "depth", "normals", "edge"}
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(2) == 2  # one train record and one validation record, written by rank 0 only
    assert (run_dir / "checkpoints" / "last.pt").is_file()
