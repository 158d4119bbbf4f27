"""Switch a model between its fast (default) and plain formulations: the same function, two computations.

Every module with a fast path has a boolean `fast` attribute; the plain formulation is the
straightforward one the fast path is tested against (tests/unit/models/test_fast_paths.py) and that the
benchmark times side by side (`python -m demt_exp.bench model --baseline plain`).
"""

from __future__ import annotations

from torch import nn


def set_fast(model: nn.Module, fast: bool) -> int:
    """Set `fast` on every module that has one; returns how many were switched."""
    switched = 0
    for module in model.modules():
        if hasattr(module, "fast"):
            module.fast = fast
            switched += 1
    return switched
