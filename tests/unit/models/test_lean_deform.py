"""ChlSpl saving less for backward (models/deform.py): with `recompute_offsets` only its input and the moved tap
coordinates (offsets, grid and sampled map rebuilt in backward), without it the input and the sampling grid (the
sampled map rebuilt, `_SampleThenConv`). Both: the plain outputs and every gradient in float64, bf16 autocast
alike, the saved bytes counted by hand, frozen weights, and no graph break under torch.compile."""

from __future__ import annotations

import pytest
import torch
from autograd_checks import saved_by_formulation

from demt_exp.models.deform import ChannelDeformConv
from demt_exp.models.model import build_model

SETTINGS = [True, False]  # recompute_offsets


def chlspl(dtype: torch.dtype = torch.float64, recompute_offsets: bool = True) -> ChannelDeformConv:
    torch.manual_seed(0)
    module = ChannelDeformConv(6, 5, "torch", recompute_offsets).to(dtype)
    with torch.no_grad():  # learned offsets of a few pixels, some of them reaching outside the map
        module.offsets.feature_conv.weight.normal_(0, 0.3)
        module.offsets.coord_conv.weight.normal_(0, 0.05)
    return module


def outputs_and_grads(module: ChannelDeformConv, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, dict]:
    module.fast = fast
    module.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_(True)
    out = module(leaf)
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out.double() * weight).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters() if p.grad is not None}
    return out.detach(), {**grads, "input": leaf.grad}


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
def test_float64_outputs_and_every_gradient_equal_the_plain_sampling(recompute_offsets: bool) -> None:
    module = chlspl(recompute_offsets=recompute_offsets)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain_out, plain_grads = outputs_and_grads(module, x, fast=False)
    lean_out, lean_grads = outputs_and_grads(module, x, fast=True)
    assert torch.equal(lean_out, plain_out)
    assert lean_grads.keys() == plain_grads.keys() == {n for n, _ in module.named_parameters()} | {"input"}
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])  # bf16: a BatchNorm's output under autocast
def test_bf16_autocast_computes_alike(input_dtype: torch.dtype, recompute_offsets: bool) -> None:
    module = chlspl(torch.float32, recompute_offsets)
    x = torch.randn(2, 6, 9, 11, generator=torch.Generator().manual_seed(2)).to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out, plain_grads = outputs_and_grads(module, x, fast=False)
        lean_out, lean_grads = outputs_and_grads(module, x, fast=True)
    assert lean_out.dtype == torch.bfloat16 and torch.equal(lean_out, plain_out)
    assert lean_grads["input"].dtype == plain_grads["input"].dtype == input_dtype
    for name, grad in plain_grads.items():
        assert lean_grads[name].dtype == grad.dtype, name
        grad, lean = grad.float(), lean_grads[name].float()
        torch.testing.assert_close(lean, grad, rtol=2e-2, atol=2e-2 * float(grad.abs().max()), msg=name)


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
def test_saved_bytes(recompute_offsets: bool) -> None:
    """Plain: the input (read by the feature conv too), the moved coordinates (18 channels, read by the grouped
    conv), the (B * C, h, w, 2) sampling grid and the sampled map. Lean: the grid or the sampled map fewer."""
    module = chlspl(torch.float32, recompute_offsets)
    x = torch.randn(2, 6, 9, 11, requires_grad=True)
    saved = saved_by_formulation(module, lambda: module(x))
    coords = 2 * 18 * 9 * 11
    assert saved[False] == 4 * (x.numel() + coords + 2 * x.numel() + x.numel())
    assert saved[True] == 4 * (x.numel() + coords + (0 if recompute_offsets else 2 * x.numel()))


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
def test_a_bf16_input_is_saved_as_it_came(recompute_offsets: bool) -> None:
    """Plain: the feature conv's fp32 copy of a bf16 input, grid_sample's own fp32 copy, the grid and the bf16
    sampled map; lean: the bf16 input itself (the fp32 copy made again in backward), and the grid without
    `recompute_offsets` (which rebuilds the bf16 copy of the 1x1 conv's weight as well)."""
    module = chlspl(torch.float32, recompute_offsets)
    x = torch.randn(2, 6, 9, 11).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        saved = saved_by_formulation(module, lambda: module(x))
    fewer = 4 + 2 - 2 + (2 * 4 if recompute_offsets else 0)  # per input value
    weight_copy = 2 * module.weight.numel() if recompute_offsets else 0  # the 1x1 conv's bf16 weight, rebuilt too
    assert saved[False] - saved[True] == fewer * x.numel() + weight_copy


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
def test_frozen_weights_and_input_without_gradient(recompute_offsets: bool) -> None:
    module = chlspl(recompute_offsets=recompute_offsets)
    module.requires_grad_(False)
    module.offsets.coord_conv.requires_grad_(True)  # only the offsets learn: the sampling grid needs a gradient
    x = torch.randn(1, 6, 7, 8, dtype=torch.float64)
    results = {}
    for fast in (False, True):
        module.fast = fast
        module.zero_grad(set_to_none=True)
        module(x).square().sum().backward()
        results[fast] = [p.grad.clone() for p in module.offsets.coord_conv.parameters()]
        assert module.weight.grad is None
    for lean, plain in zip(results[True], results[False]):
        torch.testing.assert_close(lean, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("recompute_offsets", SETTINGS)
def test_traces_without_graph_breaks_in_training(recompute_offsets: bool) -> None:
    module = chlspl(torch.float32, recompute_offsets)
    explanation = torch._dynamo.explain(module)(torch.randn(1, 6, 9, 11, requires_grad=True))
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("encoder", ["demt", "degmix"])
def test_the_encoder_setting_reaches_every_chlspl(compose, encoder: str) -> None:
    for setting in (True, False):
        cfg = compose([f"encoder={encoder}", f"decoder={encoder}", f"encoder.recompute_offsets={setting}"])
        found = [m.recompute_offsets for m in build_model(cfg).modules() if isinstance(m, ChannelDeformConv)]
        depth = cfg.encoder.depth
        assert found == [setting] * depth * len(cfg.tasks.names)
