"""fp16 loss scaling in the training loop, run for real on CPU with torch.amp.GradScaler("cpu").

fp16 autocast does not train on CPU, but the scaler's plumbing does not depend on the dtype:
a power-of-two scale S multiplies every gradient exactly, so a scaled step must apply exactly
the unscaled step's update (SGD: the update is proportional to the gradient, so a missing or
misplaced unscale would show), and a scale so large that the gradients overflow must skip
the step without calling it a non-finite loss. The training command's scaler (checkpointed, resumed, real fp16
autocast on CUDA): tests/integration/test_grad_scaler_runs.py.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from commands import TINY_RUN
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import default_collate

from demt_exp.engine.optim import build_poly_scheduler
from demt_exp.engine.precision import grad_scaler
from demt_exp.engine.step import train_step
from demt_exp.losses.task_losses import build_loss
from demt_exp.weighting import build_weighting

TASKS = ["semseg", "depth"]


class TwoHeads(nn.Module):
    """A shared 1x1 projection (named as GradNorm's default layer) and one head per task."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.projection = nn.Conv2d(3, 6, 1)
        self.heads = nn.ModuleDict({"semseg": nn.Conv2d(6, classes, 1), "depth": nn.Conv2d(6, 1, 1)})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder.projection(image).relu()
        return {task: head(features) for task, head in self.heads.items()}


def setting(compose, weighting: str = "fixed"):
    cfg = compose(
        [*TINY_RUN, f"tasks.names=[{','.join(TASKS)}]", f"weighting={weighting}", "dataset.image_size=[16,16]"]
    )
    batch = default_collate([instantiate(cfg.dataset.train)[i] for i in range(2)])
    return cfg, batch


def steps(cfg, batch, scaler: torch.amp.GradScaler | None, count: int, grad_clip: float | None, power: float = 0.9):
    """`count` train steps with SGD and a poly schedule from a fixed initialisation; the final
    parameters and step results."""
    torch.manual_seed(0)
    model = TwoHeads(int(cfg.dataset.num_semseg_classes))
    loss_fn = build_loss(cfg.tasks)
    weighting = build_weighting(cfg.weighting, TASKS, loss_fn.weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if (group := weighting.param_group(0.1)) is not None:
        optimizer.add_param_group(group)
    scheduler = build_poly_scheduler(optimizer, 10, power)
    results = [
        train_step(
            model, batch, loss_fn, optimizer, scheduler, nullcontext, grad_clip, weighting=weighting, scaler=scaler
        )
        for _ in range(count)
    ]
    return [p.detach().clone() for p in [*model.parameters(), *weighting.parameters()]], results


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "dwa", "gradnorm", "pcgrad"])
def test_a_scaled_step_applies_exactly_the_unscaled_update(compose, weighting: str) -> None:
    cfg, batch = setting(compose, weighting)
    plain, _ = steps(cfg, batch, None, 3, grad_clip=None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1000)
    scaled, results = steps(cfg, batch, scaler, 3, grad_clip=None)
    assert not any(r.overflow or r.nonfinite for r in results)
    assert scaler.get_scale() == 2.0**12
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))
    # the parameters moved (the comparison is not between two untouched initialisations)
    assert not torch.equal(plain[0], steps(cfg, batch, None, 0, grad_clip=None)[0][0])


def test_clipping_sees_the_unscaled_gradients(compose) -> None:
    """A clip norm far below the gradient norm: clipping the scaled gradients would move the
    weights 2^12 times less than clipping the true ones."""
    cfg, batch = setting(compose)
    plain, _ = steps(cfg, batch, None, 2, grad_clip=1e-3)
    scaled, _ = steps(cfg, batch, torch.amp.GradScaler("cpu", init_scale=2.0**12), 2, grad_clip=1e-3)
    unclipped, _ = steps(cfg, batch, None, 2, grad_clip=None)
    assert not torch.equal(plain[0], unclipped[0])  # the clip really acts
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before `optimizer.step()`")
def test_an_overflowing_step_is_skipped_and_is_not_a_non_finite_loss(compose) -> None:
    """Bright images make the projection's weight gradient large enough that 2^127 times it
    overflows (at the usual scale of the inputs the gradients stay below 2)."""
    cfg, batch = setting(compose)
    batch["image"] = batch["image"] * 1e4
    initial, _ = steps(cfg, batch, None, 0, grad_clip=None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-100, growth_interval=1000)
    after_skip, results = steps(cfg, batch, scaler, 1, grad_clip=1.0)
    assert results[0].overflow and results[0].nonfinite == []
    assert math.isfinite(float(results[0].loss))
    assert all(torch.equal(a, b) for a, b in zip(initial, after_skip))  # the weights did not move
    assert scaler.get_scale() == 2.0**27
    # with a constant rate (the schedule advances over a skipped step), the second step is the first real one
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-100, growth_interval=1000)
    applied, results = steps(cfg, batch, scaler, 2, grad_clip=1.0, power=0.0)
    plain, _ = steps(cfg, batch, None, 1, grad_clip=1.0, power=0.0)
    assert [r.overflow for r in results] == [True, False]
    assert all(torch.equal(a, b) for a, b in zip(plain, applied))


def test_the_scaler_follows_precision_and_its_settings() -> None:
    cpu = torch.device("cpu")
    assert not grad_scaler("fp32", cpu).is_enabled()
    assert not grad_scaler("bf16", cpu, {"enabled": "auto"}).is_enabled()
    forced = grad_scaler("fp32", cpu, {"enabled": True, "init_scale": 8.0, "growth_interval": 3})
    assert forced.is_enabled() and forced.get_scale() == 8.0 and forced.get_growth_interval() == 3
    assert not grad_scaler("fp16", cpu, {"enabled": False}).is_enabled()
    with pytest.raises(ValueError, match="trainer.grad_scaler.enabled='always'; expected auto, true or false"):
        grad_scaler("fp16", cpu, {"enabled": "always"})
    with pytest.raises(ValueError, match=r"trainer.grad_scaler has unknown keys \['init'\]"):
        grad_scaler("fp16", cpu, {"init": 1.0})
