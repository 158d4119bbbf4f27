"""State dicts: reading local weight files, the layout entries converters map along, and the one error
that names every missing, unexpected and mis-shaped key of a file that does not fit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from demt_exp.utils.errors import MissingFileError, UnreadableFileError
from demt_exp.utils.torch_files import safe_load

Transform = Literal["copy", "merge_vector", "merge_columns", "squeeze"]
Synthetic = Literal["cycle_offset", "relative_position_index", "unused_linear1"]


class ConversionError(ValueError):
    """A checkpoint does not fit the model: missing, unexpected or mis-shaped keys, all named."""


@dataclass(frozen=True)
class Entry:
    """One official tensor: where it lives in our state dict, or how to synthesise it when we have none."""

    official: str
    ours: str | None = None
    transform: Transform = "copy"
    synthetic: Synthetic | None = None
    shape: tuple[int, ...] = ()  # official shape of a synthetic entry


@dataclass
class BackboneState:
    """A backbone checkpoint rewritten to our key names by the backbone's `checkpoint_filter_fn`.

    `dropped` counts the file's tensors we do not use, by reason; `keep_init` lists prefixes of our
    tensors the file cannot provide (e.g. Swin's per-stage output norms in an ImageNet file), which
    keep their initialisation instead of failing the strict load.
    """

    layout: str
    state: dict[str, torch.Tensor]
    dropped: Counter[str] = field(default_factory=Counter)
    keep_init: tuple[str, ...] = ()


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """State dict from a file, unwrapping Lightning's "state_dict" or our trainer's "model" entry.

    Files load with `weights_only=True` (tensors and plain values; our checkpoints are such
    files); one that pickles other Python objects (some Lightning hyper-parameters) is refused
    by name unless `trust` is given, since a full unpickle can run code inside the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":  # timm's (Hugging Face) format: tensors only, nothing to unpickle
        if not path.is_file():
            raise MissingFileError(f"weights file {path} does not exist")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise UnreadableFileError(
                f"weights file {path} cannot be read ({error}); expected a safetensors file"
            ) from None
    payload: Any = safe_load(path, trust, what="weights file")
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UnreadableFileError(
            f"weights file {path} holds a {type(payload).__name__}; expected a state dict (a mapping "
            f"of names to tensors), a training checkpoint or an official DeMT/DeGMix checkpoint"
        )
    return payload


def subtree(official: str, ours: str, keys: Iterable[str]) -> list[Entry]:
    """Same-named tensors of one module (identical PyTorch module types keep the same order)."""
    entries = [Entry(official + k[len(ours) :], k) for k in keys if k.startswith(ours)]
    if not entries:
        raise ValueError(f"our model has no tensors under {ours!r}")
    return entries


def raise_problems(what: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> None:
    """The one error for a state dict that does not fit: `what`, then every kind of problem (first 10 of each)."""
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            more = f" ... ({len(items)} in all)" if len(items) > 10 else ""
            parts.append(f"{label}: {'; '.join(items[:10])}{more}")
    if parts:
        raise ConversionError(f"{what}: " + " | ".join(parts))


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that reports missing, unexpected and mis-shaped keys by name."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    raise_problems(f"cannot load {source} into {type(module).__name__}", missing, unexpected, wrong_shape)
    module.load_state_dict(state, strict=True)
