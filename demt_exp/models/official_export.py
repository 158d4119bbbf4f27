"""Our weights in the official DeMT/DeGMix layout: the inverse of `convert.official_to_ours`.

It writes official-format files from a model of ours (the tests hold the converter against such
files, key for key and value for value), filling the tensors the official layout has and ours does
not (CycleFC's fixed offsets, Swin's relative position index) the way the official code computes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from demt_exp.models.official_layout import official_layout
from demt_exp.models.state_dict import Entry, raise_problems
from demt_exp.models.swin import merge_permutation


def to_official(entry: Entry, tensor: torch.Tensor) -> torch.Tensor:
    """Our tensor -> official tensor (inverse of `to_ours`)."""
    if entry.transform == "merge_vector":
        return tensor[torch.argsort(merge_permutation(tensor.shape[0] // 4))]
    if entry.transform == "merge_columns":
        return tensor[:, torch.argsort(merge_permutation(tensor.shape[1] // 4))]
    if entry.transform == "squeeze":
        return tensor.unsqueeze(-1)
    return tensor


def cycle_offset(channels: int) -> torch.Tensor:
    """CycleFC offset pattern of a (1, 3) kernel (SPEC 1.5.3): dy = 0, dx = ((i + 1) mod 3) - 1."""
    offset = torch.zeros(1, 2 * channels, 1, 1)
    offset[0, 1::2, 0, 0] = (torch.arange(channels) + 1) % 3 - 1
    return offset


def relative_position_index(window: int) -> torch.Tensor:
    """Standard Swin index into the (2w-1)^2 bias table for every pair of window positions."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def synthesise(entry: Entry) -> torch.Tensor:
    """The tensor an official checkpoint holds where our model has none."""
    if entry.synthetic == "cycle_offset":
        return cycle_offset(entry.shape[1] // 2)
    if entry.synthetic == "relative_position_index":
        return relative_position_index(int(round(entry.shape[0] ** 0.5)))
    return torch.zeros(entry.shape)


def ours_to_official(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our state dict -> the official checkpoint's state dict: official names, shapes and order."""
    state = model.state_dict() if state is None else state
    entries = official_layout(model)
    missing = [e.ours for e in entries if e.ours is not None and e.ours not in state]
    unexpected = sorted(set(state) - {e.ours for e in entries})
    raise_problems("the model does not fit its official layout", [str(k) for k in missing], unexpected, [])
    return {e.official: synthesise(e) if e.ours is None else to_official(e, state[e.ours]) for e in entries}
