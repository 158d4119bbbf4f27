"""The task heads recomputing BatchNorm -> ReLU -> logits in backward from the 3x3 convolution's output
(models/heads.py): the plain outputs, gradients and running statistics (float64), the ReLU's output and the
batch statistics fewer saved per task, and the plain bottleneck where no backward follows."""

from __future__ import annotations

import torch
from autograd_checks import saved_by_formulation

from demt_exp.models.heads import TaskHeads

B, DIM, HIDDEN, H, W = 2, 6, 5, 4, 7
TASKS = {"semseg": 3, "depth": 1}


def heads() -> TaskHeads:
    torch.manual_seed(0)
    module = TaskHeads(TASKS, DIM, HIDDEN).double().train()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return module


def features(seed: int, grad: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {t: torch.randn(B, DIM, H, W, dtype=torch.float64, generator=gen).requires_grad_(grad) for t in TASKS}


def step(module: TaskHeads, fast: bool) -> tuple[dict, dict, dict]:
    module.fast = fast
    inputs = features(1, grad=True)
    out = module(inputs, (2 * H, 2 * W))
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum() for o in out.values()).backward()
    grads = {name: p.grad for name, p in module.named_parameters()} | {t: x.grad for t, x in inputs.items()}
    return {t: o.detach() for t, o in out.items()}, grads, {name: b.clone() for name, b in module.named_buffers()}


def test_outputs_gradients_and_running_statistics_equal_the_plain_bottleneck() -> None:
    plain, lean = step(heads(), fast=False), step(heads(), fast=True)
    for task, out in plain[0].items():
        torch.testing.assert_close(lean[0][task], out, rtol=1e-12, atol=1e-12)
    assert lean[1].keys() == plain[1].keys()
    for name, grad in plain[1].items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(lean[1][name], grad, rtol=1e-10, atol=1e-12, msg=name)
    for name, buffer in plain[2].items():  # running mean / var updated once, num_batches_tracked 1
        assert torch.equal(lean[2][name], buffer), name
    assert int(lean[2]["bottleneck.depth.bn.num_batches_tracked"]) == 1


def test_each_task_saves_the_relu_output_and_its_statistics_fewer() -> None:
    module = heads()
    inputs = features(2, grad=True)
    saved = saved_by_formulation(module, lambda: module(inputs, (H, W)))
    per_task = (B * HIDDEN * H * W + 2 * HIDDEN) * 8  # the ReLU's output, the batch mean and 1/std, float64
    assert saved[False] - saved[True] == len(TASKS) * per_task


def test_no_recomputation_without_a_backward() -> None:
    module = heads()
    module.fast = False
    expected = module(features(3), (H, W))
    module.fast = True
    with torch.no_grad():
        out = module(features(3), (H, W))
    for task, value in expected.items():
        torch.testing.assert_close(out[task], value.detach(), rtol=1e-12, atol=1e-12)
