"""Checks shared by the fast-path tests: which ops built a result, fp32 against float64, and the bytes each
formulation saves for backward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from demt_exp.bench.counts import saved_bytes
from demt_exp.models.formulation import set_fast


def graph_ops(*tensors: torch.Tensor) -> set[str]:
    """Names of every backward node that produced `tensors`."""
    names: set[str] = set()
    stack, seen = [t.grad_fn for t in tensors], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def assert_close_to_float64(result: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """fp32 against the same computation in float64: relative to the largest entry, 1e-5."""
    error = (result.double() - reference).abs().max() / reference.abs().max()
    assert error < 1e-5, f"{what}: relative error {error:.2e}"


def saved_by_formulation(module: nn.Module, forward: Callable[[], Any]) -> dict[bool, int]:
    """Bytes `forward()` saves for backward with `module` in its plain (False) and fast (True) formulation."""
    holder = nn.ModuleDict({"module": module})
    saved = {}
    for fast in (False, True):
        set_fast(module, fast)
        saved[fast] = sum(saved_bytes(forward, holder)[1].values())
    return saved
