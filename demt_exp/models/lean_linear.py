"""A cheap op and the linear layer after it, saving only the cheap op's input for backward.

Autograd keeps a linear layer's input for the weight gradient, and the op before it (a LayerNorm, a GELU)
keeps its own input as well: two activations where one suffices. `lean_linear(x, cheap, linear)` computes
`linear(cheap(x))` and saves `x` alone; backward recomputes `cheap(x)` (elementwise work, no matrix product)
and then takes the same matrix products autograd would. Same function, same dense FLOPs, one tensor fewer
per pair: in a Swin MLP (LayerNorm -> fc1 -> GELU -> fc2) the fc1 input (C per token) and the fc2 input (4C
per token); in Swin's attention the qkv projection's input (the LayerNorm's output, padded, shifted and cut
into windows: a `layout` between the two ops, whose adjoint takes the gradient back). Autocast is replayed as
the forward ran, so bf16 training computes alike.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHEAP = (nn.LayerNorm, nn.GELU)  # ops whose recomputation costs no matrix product


class Layout(Protocol):
    """A rearrangement of tokens (padding, permutation) between the cheap op and the linear layer."""

    def apply(self, x: Tensor) -> Tensor: ...

    def adjoint(self, grad: Tensor) -> Tensor: ...


def _cheap(x: Tensor, kind: str, setting: Any, params: list[Tensor]) -> Tensor:
    if kind == "layer_norm":
        shape, eps = setting
        return F.layer_norm(x, shape, *params, eps=eps)
    return F.gelu(x, approximate=setting)


def autocast_dtype(device_type: str) -> torch.dtype | None:
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
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, kind: str, setting: Any, layout: Any, *params: Tensor
    ) -> Tensor:
        ctx.kind, ctx.setting, ctx.layout, ctx.has_bias = kind, setting, layout, bias is not None
        ctx.compute = autocast_dtype(x.device.type)
        ctx.save_for_backward(x, weight, *params)
        cheap_out = _cheap(x, kind, setting, list(params))
        return F.linear(layout.apply(cheap_out) if layout else cheap_out, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, *params = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_params = list(ctx.needs_input_grad[6:])
        if ctx.kind == "layer_norm":
            shape, eps = ctx.setting
            ln_weight, ln_bias = (params + [None, None])[:2]
            cheap_out, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, ln_weight, ln_bias, eps)
        else:
            cheap_out = F.gelu(x, approximate=ctx.setting)
        compute = ctx.compute or cheap_out.dtype
        grad = grad.to(compute)
        rows = grad.flatten(0, -2)
        linear_in = ctx.layout.apply(cheap_out) if ctx.layout else cheap_out
        grad_weight = rows.t().mm(linear_in.to(compute).flatten(0, -2)).to(weight.dtype) if need_weight else None
        grad_bias = rows.sum(0).to(weight.dtype) if ctx.has_bias and need_bias else None
        grad_x, grad_params = None, [None] * len(params)
        if need_x or any(need_params):
            grad_cheap = grad.matmul(weight.to(compute)).to(cheap_out.dtype)
            grad_cheap = ctx.layout.adjoint(grad_cheap) if ctx.layout else grad_cheap
            if ctx.kind == "layer_norm":
                mask = [need_x, *(need_params + [False, False])[:2]]
                grad_x, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
                    grad_cheap, x, shape, mean, rstd, ln_weight, ln_bias, mask
                )
                grad_params = [grad_w, grad_b][: len(params)]
            else:
                grad_x = torch.ops.aten.gelu_backward(grad_cheap, x, approximate=ctx.setting)
        return (grad_x if need_x else None, grad_weight, grad_bias, None, None, None, *grad_params)


def lean_linear(x: Tensor, cheap: nn.Module, linear: nn.Linear, layout: Layout | None = None) -> Tensor:
    """`linear(cheap(x))` for a LayerNorm or GELU `cheap` (`linear(layout.apply(cheap(x)))` with a layout), saving
    `x` only (the plain computation where no backward follows)."""
    if not torch.is_grad_enabled():
        return linear(layout.apply(cheap(x)) if layout else cheap(x))
    if isinstance(cheap, nn.LayerNorm):
        params = [p for p in (cheap.weight, cheap.bias) if p is not None]
        setting = (cheap.normalized_shape, cheap.eps)
        return _CheapThenLinear.apply(x, linear.weight, linear.bias, "layer_norm", setting, layout, *params)
    if isinstance(cheap, nn.GELU):
        return _CheapThenLinear.apply(x, linear.weight, linear.bias, "gelu", cheap.approximate, layout)
    raise TypeError(f"lean_linear recomputes {[c.__name__ for c in CHEAP]}, not {type(cheap).__name__}")
