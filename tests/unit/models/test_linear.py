"""fp32 CPU linear layers through oneDNN's 1x1 convolution (`demt_exp/models/linear.py`): an opt-in route
(`trainer.cpu_linear=onednn`), switched on for each test here and off again after it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from autograd_checks import assert_close_to_float64, graph_ops
from commands import SMALL_SWIN
from paths import REPO_ROOT
from torch import nn

from demt_exp.config.compose import compose_config
from demt_exp.models.formulation import set_fast
from demt_exp.models.linear import (
    ROUTE,
    CpuLinear,
    grouped_linear,
    linear,
    takes_convolution_route,
    use_cpu_linears,
    use_onednn_linears,
)
from demt_exp.models.model import build_model

REPO = REPO_ROOT
# The default model's code behind the small Swin (commands.SMALL_SWIN); Swin has 4 linear layers per block.
SMALL_MODEL = [*SMALL_SWIN, "encoder.dim=16"]


def swin_block_linears(cfg) -> int:
    return 4 * sum(cfg.backbone.depths)


@pytest.fixture(autouse=True)
def onednn_route():
    """The route on for the test, as `trainer.cpu_linear=onednn` switches it; off again after."""
    before = ROUTE["onednn"]
    use_onednn_linears(enabled=True)
    yield
    ROUTE["onednn"] = before


def grads_of(fn, *tensors: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(upstream.to(out.dtype))
    return [out.detach()] + [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("shape", [(37, 24), (2, 5, 7, 24), (3, 1, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_convolution_route_equals_the_matrix_product_with_every_gradient(
    shape: tuple[int, ...], with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    weight = torch.randn(40, 24, generator=gen)
    bias = torch.randn(40, generator=gen) if with_bias else None
    upstream = torch.randn(*shape[:-1], 40, generator=gen, dtype=torch.float64)
    tensors = (x, weight) + ((bias,) if with_bias else ())
    fp32 = grads_of(lambda *t: linear(*t), *tensors, upstream=upstream)
    exact = grads_of(lambda *t: F.linear(*t), *(t.double() for t in tensors), upstream=upstream)
    for name, got, want in zip(["output", "grad x", "grad weight", "grad bias"], fp32, exact):
        assert got.shape == want.shape
        assert_close_to_float64(got, want, name)
    assert takes_convolution_route(x)
    assert "ConvolutionBackward0" in graph_ops(linear(x.requires_grad_(), weight, bias))


def test_a_non_contiguous_input_gives_the_same_product() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 9, generator=gen).t()  # (9, 24) with column-major rows
    weight = torch.randn(16, 24, generator=gen)
    assert_close_to_float64(linear(x, weight), F.linear(x.double(), weight.double()), "transposed input")


def test_other_dtypes_and_autocast_call_f_linear_unchanged() -> None:
    gen = torch.Generator().manual_seed(2)
    x64, w64 = (
        torch.randn(6, 8, generator=gen, dtype=torch.float64),
        torch.randn(5, 8, generator=gen, dtype=torch.float64),
    )
    assert not takes_convolution_route(x64)
    assert torch.equal(linear(x64, w64), F.linear(x64, w64))
    x = x64.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not takes_convolution_route(x)
        out = linear(x, w64.float())
    assert out.dtype == torch.bfloat16 and "ConvolutionBackward0" not in graph_ops(out)
    assert not takes_convolution_route(torch.empty(0, 8))


def test_grouped_linear_multiplies_each_group_by_its_own_block_on_both_routes() -> None:
    """(M, G*C_in) -> (M, G*C_out), checked against a per-group loop in float64; fp32 takes the
    grouped convolution, float64 the batched product."""
    gen = torch.Generator().manual_seed(3)
    groups, c_in, c_out, rows = 3, 8, 5, 11
    x = torch.randn(rows, groups * c_in, generator=gen, dtype=torch.float64)
    weight = torch.randn(groups * c_out, c_in, generator=gen, dtype=torch.float64)
    bias = torch.randn(groups * c_out, generator=gen, dtype=torch.float64)
    upstream = torch.randn(rows, groups * c_out, generator=gen, dtype=torch.float64)

    def loop(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [F.linear(xg, wg, bg) for xg, wg, bg in zip(x.split(c_in, dim=1), weight.split(c_out), bias.split(c_out))],
            dim=1,
        )

    exact = grads_of(loop, x, weight, bias, upstream=upstream)
    grouped = lambda *t: grouped_linear(*t, groups)  # noqa: E731
    for dtype in (torch.float32, torch.float64):
        got = grads_of(grouped, x.to(dtype), weight.to(dtype), bias.to(dtype), upstream=upstream)
        for name, value, want in zip(["output", "grad x", "grad weight", "grad bias"], got, exact):
            if dtype == torch.float64:
                torch.testing.assert_close(value, want, rtol=1e-12, atol=1e-12)
            else:
                assert_close_to_float64(value, want, f"{name} fp32")
    fp32 = grouped_linear(x.float().requires_grad_(), weight.float(), bias.float(), groups)
    assert "ConvolutionBackward0" in graph_ops(fp32)
    columns_major = x.float().t().contiguous().t()  # the same values, column-major
    assert_close_to_float64(
        grouped_linear(columns_major, weight.float(), bias.float(), groups), exact[0], "column-major input"
    )


def test_the_built_model_is_the_model_defined_and_the_route_is_off_by_default() -> None:
    """No class rewriting in build_model, and a fresh process multiplies with F.linear (the GPU path)."""
    script = (
        "import torch; from demt_exp.config.compose import compose_config; "
        "from demt_exp.models.model import build_model; "
        "from demt_exp.models.linear import CpuLinear, takes_convolution_route; "
        f"m = build_model(compose_config({SMALL_MODEL!r})); "
        "print(sum(type(x) is CpuLinear for x in m.modules()), sum(type(x) is torch.nn.Linear for x in m.modules()), "
        "takes_convolution_route(torch.ones(4, 4)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cpu_linears, linears, route = done.stdout.split()
    assert cpu_linears == "0" and int(linears) > swin_block_linears(compose_config(SMALL_MODEL)) and route == "False"
    defaults = compose_config([]).trainer
    assert (defaults.cpu_linear, defaults.cpu_allocator) == ("blas", "system")


def test_every_plain_linear_of_a_built_model_is_swapped_and_its_state_dict_is_unchanged() -> None:
    cfg = compose_config([*SMALL_MODEL, "tasks=nyud", "dataset.num_semseg_classes=5"])
    model = build_model(cfg)
    plain = sum(type(m) is nn.Linear for m in model.modules())
    assert plain > swin_block_linears(cfg)  # Swin's 4 per block, the patch mergings, the encoder's and decoder's
    assert use_onednn_linears(model) == plain
    assert not any(type(m) is nn.Linear for m in model.modules())
    swapped = [m for m in model.modules() if type(m) is CpuLinear]
    assert len(swapped) == plain
    attention_out = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert attention_out and all(type(m.out_proj) is not CpuLinear for m in attention_out)
    reference = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    keys = list(reference.state_dict())
    assert use_cpu_linears(reference) == 2 and list(reference.state_dict()) == keys


def test_the_plain_formulation_of_a_cpu_linear_is_f_linear() -> None:
    torch.manual_seed(4)
    layer = nn.Linear(8, 6)
    use_cpu_linears(layer)
    x = torch.randn(5, 8, requires_grad=True)
    assert "ConvolutionBackward0" in graph_ops(layer(x))
    set_fast(layer, False)
    plain = layer(x)
    assert "ConvolutionBackward0" not in graph_ops(plain)
    assert torch.equal(plain, F.linear(x, layer.weight, layer.bias))
