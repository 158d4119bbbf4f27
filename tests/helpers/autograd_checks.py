"""Checks shared by the fp32 route tests: which ops built a result, and fp32 against float64."""

from __future__ import annotations

import torch


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
