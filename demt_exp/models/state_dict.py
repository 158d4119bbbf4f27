"""Loading local weight files into a module, with errors that name the file and the keys."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from demt_exp.utils.errors import MissingFileError, UnreadableFileError
from demt_exp.utils.torch_files import safe_load


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
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if wrong_shape:
        problems.append(f"shape mismatches {wrong_shape[:10]}")
    if problems:
        raise ValueError(f"cannot load {source} into {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
