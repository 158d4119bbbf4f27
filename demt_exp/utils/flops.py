"""Multiply-accumulates from torch's FlopCounterMode, with the ops it misses added by formula.

What FlopCounterMode counts differs between torch releases and devices: torch 2.14.1 counts the
CPU kernel of `scaled_dot_product_attention` as 0, no release counts torchvision's
`deform_conv2d` or `grid_sampler_2d`, and on the meta device attention runs as plain `bmm`.
So nothing here trusts a version: `counter_gaps(device)` runs every kind of op the models use
on tiny tensors of that device, compares the counter with the formula, and returns formulas
for exactly the dispatched ops the counter left at zero. Adding only those never counts an op
twice and never leaves one out; `count_flops` also lists any op of a known kind that a model
dispatched and nobody counted, so a new kernel cannot hide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

BILINEAR_MACS = 4  # one multiply-add per corner of the bilinear stencil
GRID_SAMPLE_MACS = {0: BILINEAR_MACS, 1: 0, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic
Shape = Sequence[int]


def attention_flops(query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any) -> int:
    """softmax(q k^T) v: Nq*Nk*d MACs for the logits and Nq*Nk*d_v for the weighted sum, per batch and head."""
    rows = math.prod(query[:-1])  # batch x query heads x Nq (key heads broadcast to the query's)
    return 2 * rows * key[-2] * (query[-1] + value[-1])


def bmm_flops(a: Shape, b: Shape, *args: Any, **kwargs: Any) -> int:
    """(b, n, k) @ (b, k, m): b*n*k*m MACs."""
    return 2 * a[0] * a[1] * a[2] * b[2]


def mm_flops(a: Shape, b: Shape, *args: Any, **kwargs: Any) -> int:
    """(n, k) @ (k, m): n*k*m MACs."""
    return 2 * a[0] * a[1] * b[1]


def with_bias_first(formula: Callable[..., int]) -> Callable[..., int]:
    """addmm/baddbmm take (bias, a, b): the bias add is not a MAC."""
    return lambda bias, a, b, *args, **kwargs: formula(a, b)


def grid_sampler_2d_flops(
    input_shape: Shape, grid_shape: Shape, mode: int = 0, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    """4 MACs per output value for bilinear (16 bicubic, 0 nearest)."""
    n, c, h, w = out_shape
    return 2 * GRID_SAMPLE_MACS.get(int(mode), BILINEAR_MACS) * n * c * h * w


def deform_conv2d_flops(input_shape: Shape, weight_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """The convolution, N*C_out*H_out*W_out*(C_in/groups)*kh*kw, plus 4 MACs per sampled value
    (N*C_in*kh*kw*H_out*W_out; +1 each with a modulation mask)."""
    n, c_out, h_out, w_out = out_shape
    kh, kw = weight_shape[2], weight_shape[3]
    use_mask = bool(args[-1]) if args and isinstance(args[-1], bool) else False
    conv = n * c_out * h_out * w_out * weight_shape[1] * kh * kw
    sampled = n * input_shape[1] * kh * kw * h_out * w_out
    return 2 * (conv + (BILINEAR_MACS + int(use_mask)) * sampled)


def grid_sampler_2d_backward_flops(
    grad_shape: Shape, input_shape: Shape, grid_shape: Shape, mode: int = 0, *args: Any, out_shape: Any, **kwargs: Any
) -> int:
    """The gradients for the input and for the grid: twice the forward's MACs (the convention for both
    sampling ops' backward: one pass of the stencil per gradient)."""
    return 2 * grid_sampler_2d_flops(input_shape, grid_shape, mode, out_shape=grad_shape)


def deform_conv2d_backward_flops(
    grad_shape: Shape, input_shape: Shape, weight_shape: Shape, *args: Any, out_shape: Any, **kwargs: Any
) -> int:
    """The backward's two matrix products (the input's columns, the weights), each the forward's, with the
    sampling gradients: twice the forward."""
    return 2 * deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=grad_shape)


@cache
def backward_formulas() -> dict[Any, Callable[..., int]]:
    """The backward kernels of the sampling ops, which no torch release counts (train-step counts)."""
    import torchvision  # noqa: F401  (registers torchvision's ops)

    formulas: dict[Any, Callable[..., int]] = {torch.ops.aten.grid_sampler_2d_backward: grid_sampler_2d_backward_flops}
    if hasattr(torch.ops.torchvision, "_deform_conv2d_backward"):
        formulas[torch.ops.torchvision._deform_conv2d_backward] = deform_conv2d_backward_flops
    return formulas


@dataclass(frozen=True)
class OpKind:
    """A kind of op the models use: how to recognise its kernels, their formula, and a probe."""

    name: str
    formula_text: str
    formula: Callable[..., int]
    matches: Callable[[str], bool]
    probe: Callable[[torch.device], int]  # runs the op on tiny tensors; returns the expected MACs


def _probe_attention(device: torch.device) -> int:
    q, k, v = (torch.randn(1, 2, n, 8, device=device) for n in (10, 12, 12))
    F.scaled_dot_product_attention(q, k, v)
    return 2 * 10 * 12 * (8 + 8)


def _probe_einsum(device: torch.device) -> int:
    torch.einsum(
        "bhnd,bthnd->bhnt", torch.randn(1, 2, 10, 8, device=device), torch.randn(1, 3, 2, 10, 8, device=device)
    )
    return 2 * 10 * 3 * 8


def _probe_linear(device: torch.device) -> int:
    F.linear(torch.randn(3, 5, device=device), torch.randn(4, 5, device=device), torch.randn(4, device=device))
    return 3 * 5 * 4


def _probe_grid_sample(device: torch.device) -> int:
    F.grid_sample(
        torch.randn(1, 4, 5, 6, device=device), torch.rand(1, 5, 6, 2, device=device) * 2 - 1, align_corners=False
    )
    return BILINEAR_MACS * 4 * 5 * 6


def _probe_deform_conv2d(device: torch.device) -> int:
    from torchvision.ops import deform_conv2d

    deform_conv2d(
        torch.randn(1, 4, 5, 6, device=device),
        torch.randn(1, 8, 5, 6, device=device),
        torch.randn(3, 4, 1, 1, device=device),
    )
    return 3 * 5 * 6 * 4 + BILINEAR_MACS * 4 * 5 * 6


def _named(*fragments: str) -> Callable[[str], bool]:
    return lambda op: any(fragment in op for fragment in fragments)


OP_KINDS: tuple[OpKind, ...] = (
    OpKind(
        "scaled_dot_product_attention",
        "B*heads*Nq*Nk*(d + d_v)",
        attention_flops,
        _named("scaled_dot_product", "flash_attention", "efficient_attention"),
        _probe_attention,
    ),
    OpKind("einsum (bmm)", "b*n*k*m", bmm_flops, lambda op: op == "aten.bmm", _probe_einsum),
    OpKind("linear (addmm)", "n*k*m", with_bias_first(mm_flops), lambda op: op == "aten.addmm", _probe_linear),
    OpKind(
        "grid_sample",
        "4 per sampled (output) value, bilinear",
        grid_sampler_2d_flops,
        _named("grid_sampler_2d"),
        _probe_grid_sample,
    ),
    OpKind(
        "deform_conv2d",
        "N*C_out*H_out*W_out*(C_in/groups)*kh*kw + 4 per sampled value (N*C_in*kh*kw*H_out*W_out)",
        deform_conv2d_flops,
        _named("deform_conv2d"),
        _probe_deform_conv2d,
    ),
)
OTHER_FORMULAS: dict[str, Callable[..., int]] = {  # kernels a kind may reach besides its probe's
    "aten.mm": mm_flops,
    "aten.baddbmm": with_bias_first(bmm_flops),
    "aten.bmm": bmm_flops,
    "aten.addmm": with_bias_first(mm_flops),
}


class DispatchedOps(TorchDispatchMode):
    """Records every op packet that reaches the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def op_name(op: Any) -> str:
    """`aten.bmm`, `torchvision.deform_conv2d`: the packet's qualified name."""
    return str(op)


@contextmanager
def counting(custom_mapping: dict[Any, Callable[..., int]]) -> Iterator[tuple[FlopCounterMode, DispatchedOps]]:
    """The counter with extra formulas, and the ops it executed (recorded beneath it, so after any
    decomposition the counter itself performs)."""
    with DispatchedOps() as seen, FlopCounterMode(display=False, custom_mapping=custom_mapping) as counter:
        yield counter, seen


@dataclass
class Gaps:
    """What the counter misses on one device: formulas to add, and kinds it could not check."""

    formulas: dict[Any, tuple[str, Callable[..., int]]] = field(default_factory=dict)  # op -> (kind, formula)
    unavailable: dict[str, str] = field(default_factory=dict)  # kind -> why its probe could not run
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (counted, expected) MACs

    def mapping(self) -> dict[Any, Callable[..., int]]:
        return {op: formula for op, (_, formula) in self.formulas.items()}


def _uncounted(counter: FlopCounterMode, seen: set[Any]) -> list[Any]:
    """Dispatched ops for which the counter holds no FLOPs."""
    counts = counter.get_flop_counts().get("Global", {})
    return [op for op in seen if not counts.get(op)]


def _probe(kind: OpKind, device: torch.device, gaps: Gaps) -> None:
    try:
        with counting({}) as (counter, seen):
            expected = kind.probe(device)
    except (ImportError, RuntimeError, NotImplementedError) as error:  # e.g. torchvision ops missing on meta
        gaps.unavailable[kind.name] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        return
    if counter.get_total_flops() // 2 >= expected:
        return
    for op in _uncounted(counter, seen.ops):
        name = op_name(op)
        formula = kind.formula if kind.matches(name) else OTHER_FORMULAS.get(name)
        if formula is not None:
            gaps.formulas[op] = (kind.name, formula)
    with counting(gaps.mapping()) as (counter, _):
        kind.probe(device)
    if counter.get_total_flops() // 2 != expected:
        gaps.mismatched[kind.name] = (counter.get_total_flops() // 2, expected)


@cache
def counter_gaps(device_type: str) -> Gaps:
    """Probe every op kind on a device of this type (cached: the answer depends only on the install)."""
    gaps = Gaps()
    for kind in OP_KINDS:
        _probe(kind, torch.device(device_type), gaps)
    return gaps


@dataclass
class FlopCount:
    """One counted forward pass: per-module, per-op FLOPs and the ops added by formula."""

    by_module: dict[str, dict[Any, int]]
    added_ops: dict[Any, str]  # op -> kind name, for the ops whose FLOPs come from our formulas
    unaccounted: list[str]  # ops of a known kind that ran and that nothing counted


def count_flops(run: Callable[[], Any], device: torch.device) -> FlopCount:
    """Run `run()` under the counter with the formulas the counter needs on this device."""
    gaps, backward = counter_gaps(device.type), backward_formulas()
    with counting({**gaps.mapping(), **backward}) as (counter, seen):
        run()
    known = [kind.matches for kind in OP_KINDS]
    added = {op for op in seen.ops if op in gaps.formulas or op in backward}
    unaccounted = sorted(
        op_name(op)
        for op in _uncounted(counter, seen.ops)
        if op not in added and (any(match(op_name(op)) for match in known) or op_name(op) in OTHER_FORMULAS)
    )
    by_module = {name: dict(ops) for name, ops in counter.get_flop_counts().items()}
    kinds = {op: kind for op, (kind, _) in gaps.formulas.items()} | {op: "backward (2x forward)" for op in backward}
    return FlopCount(
        by_module, {op: kind for op, kind in kinds.items() if op in added or op in gaps.formulas}, unaccounted
    )
