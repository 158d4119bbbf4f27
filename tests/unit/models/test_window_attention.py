"""Swin window attention saving q, k, v and the rows' log-sum-exp instead of the probabilities
(models/window_attention.py), the qkv projection saving the block's input instead of its normalised windows
(models/lean_linear.py with swin.WindowLayout) and the patch merging its merged tokens alone: timm's outputs and
every gradient in float64, bf16 autocast alike, the saved bytes counted by hand, frozen tables and inputs without
gradient, and the plain route where it must run."""

from __future__ import annotations

import pytest
import torch
from autograd_checks import saved_by_formulation
from timm.models.swin_transformer import WindowAttention
from torch import nn

from demt_exp.bench.counts import saved_bytes
from demt_exp.models.lean_linear import lean_linear
from demt_exp.models.swin import SwinBackbone, WindowLayout, _shift_mask
from demt_exp.models.window_attention import window_attention

CHANNELS, HEADS, WINDOW = 24, 3, 7
TOKENS = WINDOW * WINDOW
GRID = (14, 28)  # 2 x 4 windows per image


def attention(dtype: torch.dtype = torch.float64) -> WindowAttention:
    torch.manual_seed(0)
    attn = WindowAttention(CHANNELS, num_heads=HEADS, window_size=WINDOW).to(dtype)
    with torch.no_grad():  # a bias table far from its near-zero initialisation, so it shapes the probabilities
        attn.relative_position_bias_table.normal_(0, 1)
    return attn


def grads(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, fast: bool) -> tuple[torch.Tensor, dict]:
    attn.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_(True)
    out = window_attention(attn, leaf, mask, fast)
    weight = torch.linspace(-2, 2, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out.double() * weight).sum().backward()
    found = {name: p.grad for name, p in attn.named_parameters() if p.grad is not None}
    return out.detach(), {**found, "input": leaf.grad}


@pytest.mark.parametrize("shifted", [False, True])
def test_float64_outputs_and_every_gradient_equal_timm_attention(shifted: bool) -> None:
    """Projection weight and bias included: their gradients read the rebuilt attention output."""
    attn = attention()
    mask = _shift_mask(*GRID, WINDOW, 3).double() if shifted else None
    x = torch.randn(2 * 8, TOKENS, CHANNELS, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain_out, plain_grads = grads(attn, x, mask, fast=False)
    lean_out, lean_grads = grads(attn, x, mask, fast=True)
    assert torch.equal(lean_out, plain_out)  # the forward runs timm's ops in timm's order
    assert lean_grads.keys() == plain_grads.keys() and "relative_position_bias_table" in lean_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_autocast_computes_alike() -> None:
    attn = attention(torch.float32)
    mask = _shift_mask(*GRID, WINDOW, 3)
    x = torch.randn(8, TOKENS, CHANNELS, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out, plain_grads = grads(attn, x, mask, fast=False)
        lean_out, lean_grads = grads(attn, x, mask, fast=True)
    assert lean_out.dtype == torch.bfloat16 and torch.equal(lean_out, plain_out)
    for name, grad in plain_grads.items():
        assert lean_grads[name].dtype == grad.dtype == torch.float32, name
        torch.testing.assert_close(lean_grads[name], grad, rtol=2e-2, atol=2e-2 * float(grad.abs().max()), msg=name)


def test_saves_the_log_sum_exp_in_place_of_the_probabilities() -> None:
    """Plain: the input, q (scaled), k and v copies, the probabilities and the projection's input. Lean: the input,
    qkv, the (heads, N, N) bias, the (windows per image, N, N) mask and the lse."""
    attn = attention(torch.float32)
    mask = _shift_mask(*GRID, WINDOW, 3)
    windows = 2 * mask.shape[0]
    x = torch.randn(windows, TOKENS, CHANNELS, requires_grad=True)
    holder = nn.ModuleDict({"attn": attn})
    saved = {}
    for fast in (False, True):
        saved[fast] = sum(saved_bytes(lambda: window_attention(attn, x, mask, fast), holder)[1].values())
    tokens = windows * TOKENS
    small = HEADS * TOKENS**2 + mask.shape[0] * TOKENS**2 + windows * HEADS * TOKENS  # bias, mask, lse
    assert saved[False] == 4 * (5 * tokens * CHANNELS + windows * HEADS * TOKENS**2)
    assert saved[True] == 4 * (4 * tokens * CHANNELS + small)  # the projection's input is rebuilt too


@pytest.mark.parametrize("frozen", [("relative_position_bias_table",), ("relative_position_bias_table", "qkv")])
def test_frozen_parts_and_input_without_gradient(frozen: tuple[str, ...]) -> None:
    """A frozen table; then the qkv projection frozen too and an input without gradient: only the output
    projection learns, and backward takes its gradient alone."""
    attn = attention()
    for name in frozen:
        getattr(attn, name).requires_grad_(False)
    x = torch.randn(8, TOKENS, CHANNELS, dtype=torch.float64, requires_grad="qkv" not in frozen)
    found = {}
    for fast in (False, True):
        attn.zero_grad(set_to_none=True)
        window_attention(attn, x, None, fast).square().sum().backward()
        found[fast] = {name: p.grad.clone() for name, p in attn.named_parameters() if p.grad is not None}
    assert found[True].keys() == found[False].keys() and "proj.weight" in found[True]
    assert not any(name.startswith(frozen) for name in found[True])
    for name, grad in found[False].items():
        torch.testing.assert_close(found[True][name], grad, rtol=1e-12, atol=1e-12, msg=name)


def test_attention_dropout_and_no_grad_take_timm_route() -> None:
    attn = attention(torch.float32)
    x = torch.randn(8, TOKENS, CHANNELS, requires_grad=True)
    holder = nn.ModuleDict({"attn": attn})
    attn.attn_drop.p = 0.1
    dropped = saved_bytes(lambda: window_attention(attn, x, None), holder)[1]
    assert dropped.keys() == {"attn"}  # timm's own forward ran (the module's hooks saw it)
    attn.attn_drop.p = 0.0
    with torch.no_grad():
        torch.testing.assert_close(window_attention(attn, x, None), attn(x), rtol=0, atol=0)


@pytest.mark.parametrize(("height", "width", "shift"), [(14, 28, 3), (10, 17, 3), (10, 17, 0)])
def test_window_layout_is_undone_by_its_adjoint(height: int, width: int, shift: int) -> None:
    """adjoint(apply(x)) == x, and <apply(x), g> == <x, adjoint(g)>: the gradient of the layout is its adjoint."""
    layout = WindowLayout(WINDOW, shift, height, width)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, height, width, 5, dtype=torch.float64, generator=gen)
    windows = layout.apply(x)
    assert windows.shape == (2 * layout.padded[0] * layout.padded[1] // TOKENS, TOKENS, 5)
    assert torch.equal(layout.adjoint(windows), x)
    g = torch.randn(windows.shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close((windows * g).sum(), (x * layout.adjoint(g)).sum(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_norm_then_windows_then_qkv_saves_the_input_alone(dtype: torch.dtype) -> None:
    torch.manual_seed(4)
    norm, qkv = nn.LayerNorm(CHANNELS).to(dtype), nn.Linear(CHANNELS, 3 * CHANNELS).to(dtype)
    with torch.no_grad():
        norm.weight.add_(torch.randn(CHANNELS, dtype=dtype))
    layout = WindowLayout(WINDOW, 3, 10, 17)
    x = torch.randn(2, 10, 17, CHANNELS, dtype=dtype, requires_grad=True)
    params = [x, *norm.parameters(), *qkv.parameters()]
    results = {}
    for lean in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.float32):
            out = lean_linear(x, norm, qkv, layout) if lean else qkv(layout.apply(norm(x)))
        weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
        results[lean] = out, torch.autograd.grad((out.double() * weight).sum(), params)
    assert torch.equal(results[True][0], results[False][0])
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-2, "atol": 2e-2}
    for lean_grad, plain_grad in zip(results[True][1], results[False][1]):
        assert lean_grad.dtype == plain_grad.dtype == dtype
        torch.testing.assert_close(lean_grad, plain_grad, **tolerance)


def test_each_swin_block_saves_the_probabilities_and_normalised_windows_fewer() -> None:
    """Per block, fewer: the probabilities (windows x heads x N^2), the padded, shifted windows of norm1's output
    and the projection's input (C per padded token each), norm1's mean and 1/std, fc1's and fc2's inputs (C + 4C
    per token) and norm2's statistics; more: the log-sum-exp (windows x heads x N), the (heads, N, N) bias and
    each grid's cached shift mask (windows per image, N, N), once. Per patch merging into stages 2-4, fewer: the
    LayerNorm's output (4C of the stage before per token) and its statistics. Stage maps of a 64 x 64 image: 16,
    8, 4, 2, padded to 21, 14, 7, 7 (stages 3 and 4 share one mask). Two heads or more everywhere, so the plain
    products copy q, k and v."""
    torch.manual_seed(0)
    backbone = SwinBackbone("swin_t", drop_path_rate=0.0, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4])
    image = torch.randn(2, 3, 64, 64)
    saved = saved_by_formulation(backbone, lambda: backbone(image))
    fewer = 0
    for side, padded, channels, heads in zip([16, 8, 4, 2], [21, 14, 7, 7], [16, 32, 64, 128], [2, 2, 4, 4]):
        tokens, windows = 2 * side * side, 2 * (padded // WINDOW) ** 2
        # attention side: probabilities, normalised windows and their statistics, the projection's input
        per_block = windows * heads * TOKENS**2 + 2 * windows * TOKENS * channels + 2 * tokens
        per_block += tokens * (channels + 4 * channels + 2)  # MLP side
        per_block -= windows * heads * TOKENS + heads * TOKENS**2
        fewer += 2 * per_block
        if channels > 16:  # merged from the stage before: 4 x (channels / 2) values and 2 statistics per token
            fewer += tokens * (2 * channels + 2)
    fewer -= (9 + 4 + 1) * TOKENS**2
    assert saved[False] - saved[True] == 4 * fewer
