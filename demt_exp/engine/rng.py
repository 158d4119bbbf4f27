"""Random-number streams: seeding, checkpointable states, and per-sample seeds.

States are stored as tensors and plain Python values so checkpoints load with
`weights_only=True`. Sample randomness (augmentation) is derived from (seed, epoch, index)
alone, never from which loader worker or process happened to draw the sample, so a resumed
run, or one with another number of workers, sees exactly the same augmented samples.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (NumPy's SeedSequence hashing)."""
    high, low = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states as tensors and plain values."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, mt_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(kind), keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def seeded(parts: Sequence[int]) -> Iterator[None]:
    """Run a block with Python, NumPy and torch (CPU) seeded from `parts`; restore the streams after."""
    saved_python, saved_numpy, saved_torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed = derived_seed(*parts)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)
        torch.set_rng_state(saved_torch)
