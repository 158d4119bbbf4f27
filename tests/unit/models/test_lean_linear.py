"""The Swin MLP saving only the LayerNorm's and the GELU's inputs (models/lean_linear.py), with the window
attention of models/window_attention.py: the same outputs and gradients as the plain backbone (float64 exactly;
bf16 autocast alike), exactly C + 4C + 2 values per token and block fewer saved for backward, frozen LayerNorms
and inputs without gradient, and no graph break under compile."""

from __future__ import annotations

import pytest
import torch
from autograd_checks import saved_by_formulation
from torch import nn

from demt_exp.models import swin
from demt_exp.models.lean_linear import lean_linear
from demt_exp.models.swin import SwinBackbone

SMALL = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4]}


def small_swin(dtype: torch.dtype = torch.float32) -> SwinBackbone:
    torch.manual_seed(0)
    backbone = SwinBackbone("swin_t", drop_path_rate=0.0, **SMALL).to(dtype).train()
    with torch.no_grad():
        for param in backbone.parameters():  # LayerNorm affines and biases away from 1 and 0 too
            param.add_(torch.randn_like(param) * 0.1)
    return backbone


def outputs_and_grads(backbone: SwinBackbone, image: torch.Tensor, fast: bool) -> tuple[list, dict]:
    backbone.fast = fast
    backbone.zero_grad(set_to_none=True)
    leaf = image.detach().clone().requires_grad_(True)
    features = backbone(leaf)
    weights = [torch.linspace(-1, 1, f.numel(), dtype=torch.float64).reshape(f.shape) for f in features]
    sum((f.double() * w).sum() for f, w in zip(features, weights)).backward()
    grads = {name: p.grad for name, p in backbone.named_parameters() if p.grad is not None}
    return [f.detach() for f in features], {**grads, "image": leaf.grad}


def test_float64_outputs_and_every_gradient_equal_the_plain_mlp() -> None:
    backbone = small_swin(torch.float64)
    image = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain_out, plain_grads = outputs_and_grads(backbone, image, fast=False)
    lean_out, lean_grads = outputs_and_grads(backbone, image, fast=True)
    assert all(torch.equal(a, b) for a, b in zip(lean_out, plain_out))
    assert lean_grads.keys() == plain_grads.keys() and "stages.0.blocks.0.norm2.weight" in lean_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_autocast_computes_alike() -> None:
    backbone = small_swin()
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out, plain_grads = outputs_and_grads(backbone, image, fast=False)
        lean_out, lean_grads = outputs_and_grads(backbone, image, fast=True)
    assert all(torch.equal(a, b) for a, b in zip(lean_out, plain_out))  # the forward runs the same ops
    for name, grad in plain_grads.items():
        assert lean_grads[name].dtype == grad.dtype == torch.float32, name
        torch.testing.assert_close(lean_grads[name], grad, rtol=2e-2, atol=2e-2 * float(grad.abs().max()), msg=name)


def test_each_block_saves_its_fc1_and_fc2_inputs_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    """fc1's input (C values per token), fc2's (4C) and LayerNorm's two statistics (mean, 1/std) are no longer
    saved; nothing else changes (the attention and the patch merging, whose own saving
    tests/unit/models/test_window_attention.py counts, run timm's way here in both)."""
    timm_attention, timm_merging = swin.shifted_window_attention, swin.patch_merging
    monkeypatch.setattr(swin, "shifted_window_attention", lambda block, x, fast: timm_attention(block, x, False))
    monkeypatch.setattr(swin, "patch_merging", lambda downsample, x, fast: timm_merging(downsample, x, False))
    backbone = small_swin()
    image = torch.randn(2, 3, 64, 64)
    saved = saved_by_formulation(backbone, lambda: backbone(image))
    tokens = [2 * (16 // 2**i) ** 2 for i in range(4)]  # stride 4, 8, 16, 32 on a 64 x 64 image
    widths = [16 * 2**i for i in range(4)]
    expected = sum(2 * n * (c + 4 * c + 2) * 4 for n, c in zip(tokens, widths))  # 2 blocks per stage, fp32
    assert saved[False] - saved[True] == expected


def test_frozen_norms_and_inputs_without_gradient() -> None:
    torch.manual_seed(3)
    norm, linear = nn.LayerNorm(8).double(), nn.Linear(8, 5).double()
    norm.requires_grad_(False)
    x = torch.randn(4, 3, 8, dtype=torch.float64)  # no gradient wanted for the input
    lean_linear(x, norm, linear).square().sum().backward()
    lean = linear.weight.grad.clone(), linear.bias.grad.clone()
    linear.zero_grad()
    linear(norm(x)).square().sum().backward()
    torch.testing.assert_close(lean, (linear.weight.grad, linear.bias.grad), rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="recomputes"):
        lean_linear(x, nn.ReLU(), linear)


def test_the_backbone_traces_without_graph_breaks_in_training() -> None:
    backbone = small_swin()
    explanation = torch._dynamo.explain(backbone)(torch.randn(1, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
