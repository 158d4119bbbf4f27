"""A cheap op and the linear layer after it, saving only the cheap op's input for backward.

Autograd keeps a linear layer's input for the weight gradient, and the op before it (a LayerNorm, a GELU)
keeps its own input as well: two activations where one suffices. `lean_linear(x, cheap, linear)` computes
`linear(cheap(x))` and saves `x` alone; backward recomputes `cheap(x)` (elementwise work, no matrix product)
and then takes the same matrix products autograd would. Same function, same dense FLOPs, one tensor fewer
per pair: in a Swin MLP (LayerNorm -> fc1 -> GELU -> fc2) the fc1 input (C per token) and the fc2 input (4C
per token). Autocast is replayed as the forward ran, so bf16 training computes alike.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHEAP = (nn.LayerNorm, nn.GELU)  # ops whose recomputation costs no matrix product


def _cheap(x: Tensor, kind: str, setting: Any, params: list[Tensor]) -> Tensor:
    if kind == "layer_norm":
        shape, eps = setting
        return F.layer_norm(x, shape, *params, eps=eps)
    return F.gelu(x, approximate=setting)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs matrix products in on this device; None where it is off or does not exist
    (the meta device of the model-fit check)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return None
    return torch.get_autocast_dtype(device_type) if enabled else None


class _CheapThenLinear(torch.autograd.Function):
    """Backward in aten ops alone (no autograd.grad), so torch.compile traces it without a graph break. Autocast
    leaves LayerNorm in float32 and GELU in its input's dtype, so recomputing them without autocast gives the
    forward's values; the matrix products run in the dtype autocast gave the forward's."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, kind: str, setting: Any, *params: Tensor):
        ctx.kind, ctx.setting, ctx.has_bias = kind, setting, bias is not None
        ctx.compute = _autocast_dtype(x.device.type)
        ctx.save_for_backward(x, weight, *params)
        return F.linear(_cheap(x, kind, setting, list(params)), weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, *params = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_params = list(ctx.needs_input_grad[5:])
        if ctx.kind == "layer_norm":
            shape, eps = ctx.setting
            ln_weight, ln_bias = (params + [None, None])[:2]
            cheap_out, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, ln_weight, ln_bias, eps)
        else:
            cheap_out = F.gelu(x, approximate=ctx.setting)
        compute = ctx.compute or cheap_out.dtype
        grad = grad.to(compute)
        rows = grad.flatten(0, -2)
        grad_weight = rows.t().mm(cheap_out.to(compute).flatten(0, -2)).to(weight.dtype) if need_weight else None
        grad_bias = rows.sum(0).to(weight.dtype) if ctx.has_bias and need_bias else None
        grad_x, grad_params = None, [None] * len(params)
        if need_x or any(need_params):
            grad_cheap = grad.matmul(weight.to(compute)).to(cheap_out.dtype)
            if ctx.kind == "layer_norm":
                mask = [need_x, *(need_params + [False, False])[:2]]
                grad_x, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
                    grad_cheap, x, shape, mean, rstd, ln_weight, ln_bias, mask
                )
                grad_params = [grad_w, grad_b][: len(params)]
            else:
                grad_x = torch.ops.aten.gelu_backward(grad_cheap, x, approximate=ctx.setting)
        return (grad_x if need_x else None, grad_weight, grad_bias, None, None, *grad_params)


def lean_linear(x: Tensor, cheap: nn.Module, linear: nn.Linear) -> Tensor:
    """`linear(cheap(x))` for a LayerNorm or GELU `cheap`, saving `x` only (the plain computation where no
    backward follows)."""
    if not torch.is_grad_enabled():
        return linear(cheap(x))
    if isinstance(cheap, nn.LayerNorm):
        params = [p for p in (cheap.weight, cheap.bias) if p is not None]
        return _CheapThenLinear.apply(
            x, linear.weight, linear.bias, "layer_norm", (cheap.normalized_shape, cheap.eps), *params
        )
    if isinstance(cheap, nn.GELU):
        return _CheapThenLinear.apply(x, linear.weight, linear.bias, "gelu", cheap.approximate)
    raise TypeError(f"lean_linear recomputes {[c.__name__ for c in CHEAP]}, not {type(cheap).__name__}")
