"""The deformable mixer's GELU -> BatchNorm pairs saving only the GELU's input (models/mixer.py): the same
outputs, gradients and running statistics as the plain pairs (float64), one map fewer saved per pair, and the
same trained model under activation checkpointing."""

from __future__ import annotations

import torch
from torch import nn

from demt_exp.bench.counts import saved_bytes
from demt_exp.models.mixer import DeformableMixer

B, DIM, H, W = 2, 8, 5, 6


def mixer(depth: int = 2) -> DeformableMixer:
    torch.manual_seed(0)
    module = DeformableMixer(DIM, depth, deform_backend="torch").double().train()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return module


def step(module: DeformableMixer, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, dict, dict]:
    for block in module:
        block.fast = fast
    module.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_(True)
    out = module(leaf)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()} | {"input": leaf.grad}
    return out.detach(), grads, {name: b.clone() for name, b in module.named_buffers()}


def test_outputs_gradients_and_running_statistics_equal_the_plain_pairs() -> None:
    x = torch.randn(B, DIM, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain_module, lean_module = mixer(), mixer()
    plain, lean = step(plain_module, x, fast=False), step(lean_module, x, fast=True)
    torch.testing.assert_close(lean[0], plain[0], rtol=1e-12, atol=1e-12)
    for name, grad in plain[1].items():
        torch.testing.assert_close(lean[1][name], grad, rtol=1e-10, atol=1e-12, msg=name)
    assert lean[2].keys() == plain[2].keys()
    for name, buffer in plain[2].items():  # running mean / var updated once, num_batches_tracked 1
        assert torch.equal(lean[2][name], buffer), name
    assert int(lean[2]["0.channel_norm.num_batches_tracked"]) == 1


def test_each_pair_saves_one_map_and_its_statistics_fewer() -> None:
    module = mixer(depth=2)
    holder = nn.ModuleDict({"mixer": module})
    x = torch.randn(B, DIM, H, W, dtype=torch.float64, requires_grad=True)
    saved = {}
    for fast in (False, True):
        for block in module:
            block.fast = fast
        saved[fast] = saved_bytes(lambda: module(x), holder)[1]["mixer"]
    pairs = 2 * 2  # two blocks, two GELU -> BatchNorm pairs each
    per_pair = (B * DIM * H * W + 2 * DIM) * 8  # the GELU's output and the batch mean and 1/std, float64
    assert saved[False] - saved[True] == pairs * per_pair


def test_backward_twice_through_the_graph_as_per_task_weightings_do() -> None:
    """GradNorm and PCGrad take one gradient per task through the same graph: each recomputes the pairs."""
    x = torch.randn(B, DIM, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads, buffers = {}, {}
    for fast in (False, True):
        module = mixer()
        for block in module:
            block.fast = fast
        out = module(x)
        first = torch.autograd.grad(out[:, :4].sum(), list(module.parameters()), retain_graph=True)
        second = torch.autograd.grad(out[:, 4:].square().sum(), list(module.parameters()))
        grads[fast], buffers[fast] = (first, second), [b.clone() for b in module.buffers()]
    for plain, lean in zip(grads[False], grads[True]):
        for a, b in zip(plain, lean):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(buffers[False], buffers[True]))


def test_a_sync_batch_norm_keeps_the_plain_pair() -> None:
    """Multi-GPU training converts the BatchNorms; their recomputation would add collectives to the backward."""
    module = nn.SyncBatchNorm.convert_sync_batchnorm(mixer(depth=1))
    holder = nn.ModuleDict({"mixer": module})
    x = torch.randn(B, DIM, H, W, dtype=torch.float64, requires_grad=True)
    saved = {}
    for fast in (False, True):
        module[0].fast = fast
        saved[fast] = saved_bytes(lambda: module(x), holder)[1]["mixer"]
    assert saved[True] == saved[False]


def test_no_recomputation_without_a_backward() -> None:
    module = mixer(depth=1).eval()
    x = torch.randn(B, DIM, H, W, dtype=torch.float64)
    with torch.no_grad():
        eval_out = module(x)
    for block in module:
        block.fast = False
    with torch.no_grad():
        assert torch.equal(module(x), eval_out)
