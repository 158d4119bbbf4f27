"""Where a training step's time goes: each component's forward as a profiler range, the rest (backward and
optimiser) as what is left of the step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

COMPONENTS = ("backbone", "encoder", "decoder", "heads")


def component_shares(model: nn.Module, train_step: Callable[[], None], device: torch.device) -> dict[str, float]:
    """Share of one train step's time per component (forward ranges) and the rest (backward, optimiser)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    handles = []
    for name in COMPONENTS:
        module = getattr(model, name)
        ranges: list[Any] = []

        def enter(_m: nn.Module, _i: Any, name: str = name, ranges: list[Any] = ranges) -> None:
            ranges.append(record_function(f"component:{name}"))
            ranges[-1].__enter__()

        def leave(_m: nn.Module, _i: Any, _o: Any, ranges: list[Any] = ranges) -> None:
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            train_step()
        total_us = (time.perf_counter() - start) * 1e6
    finally:
        for handle in handles:
            handle.remove()
    spans = {
        e.key.removeprefix("component:"): e.cpu_time_total
        for e in prof.key_averages()
        if e.key.startswith("component:")
    }
    shares = {name: spans.get(name, 0.0) / total_us for name in COMPONENTS}
    shares["backward+optimizer"] = max(0.0, 1.0 - sum(shares.values()))
    return shares
