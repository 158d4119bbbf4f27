"""What each model component gives the next: the contract a backbone, encoder or decoder of your own keeps.

`build_model` instantiates the three from their config groups (`backbone=`, `encoder=`, `decoder=`, any
`_target_`, your own package included) and wires them (docs/extending.md):

- backbone: an `nn.Module` with `out_channels: Sequence[int]`; `forward(image (B, 3, H, W))` returns one
  feature map per entry, `(B, out_channels[i], h_i, w_i)`, finest first, no larger than the image.
- encoder: built with `in_channels=backbone.out_channels, tasks=[...]` and its own config; has `dim: int`;
  `forward(features)` returns whatever its decoder takes.
- decoder: built with `tasks=[...]` and its own config; `forward(encoded)` returns `{task: (B, encoder.dim,
  h, w)}` for every task, which the per-task heads turn into predictions at the input size. An optional
  `bottleneck_divisor` sets the heads' width (sum(out_channels) // divisor, 8 if absent).

Checks run once, at build time for the attributes and on the model's first forward for the outputs, so a
component that breaks the contract fails naming its class, what it returned and what was expected, not
deep inside the next component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from demt_exp.utils.describe import describe
from demt_exp.utils.errors import UserError


class ContractError(UserError, TypeError):
    """A component that does not give what the next one is promised (one line, exit 2, like a config mistake)."""


def _name(component: nn.Module) -> str:
    cls = type(component)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_attributes(backbone: nn.Module, encoder: nn.Module) -> list[int]:
    """The backbone's `out_channels` (positive ints) and the encoder's `dim`, before anything is wired."""
    channels = getattr(backbone, "out_channels", None)
    if not isinstance(channels, Sequence) or not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ContractError(
            f"backbone {_name(backbone)}: out_channels is {channels!r}; expected a list of positive ints, the "
            "channels of each feature map its forward returns"
        )
    dim = getattr(encoder, "dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ContractError(
            f"encoder {_name(encoder)}: dim is {dim!r}; expected a positive int, the channels of each task's "
            "features the decoder returns"
        )
    return list(channels)


def check_features(backbone: nn.Module, features: Any, image: torch.Tensor) -> None:
    """The backbone's forward: one (B, out_channels[i], h, w) map per entry of `out_channels`."""
    expected = list(backbone.out_channels)
    wanted = f"a list of {len(expected)} tensors (B, C, h, w) with C = out_channels {expected}"
    if not isinstance(features, (list, tuple)) or len(features) != len(expected):
        count = f" of {len(features)}" if isinstance(features, (list, tuple)) else ""
        raise ContractError(f"backbone {_name(backbone)} returned {describe(features)}{count}; expected {wanted}")
    batch, height, width = image.shape[0], image.shape[-2], image.shape[-1]
    for i, (feature, channels) in enumerate(zip(features, expected)):
        if not (
            isinstance(feature, torch.Tensor)
            and feature.dim() == 4
            and feature.shape[0] == batch
            and feature.shape[1] == channels
            and feature.shape[2] <= height
            and feature.shape[3] <= width
        ):
            raise ContractError(
                f"backbone {_name(backbone)}: feature map {i} is {describe(feature)}; expected ({batch}, {channels}, "
                f"h, w) with h <= {height}, w <= {width} for an image of shape {tuple(image.shape)}"
            )


def check_decoded(decoder: nn.Module, decoded: Any, tasks: Sequence[str], dim: int, batch: int) -> None:
    """The decoder's forward: {task: (B, dim, h, w)} for exactly the model's tasks."""
    if not isinstance(decoded, Mapping) or set(decoded) != set(tasks):
        keys = sorted(map(str, decoded)) if isinstance(decoded, Mapping) else None
        got = f"a mapping with keys {keys}" if keys is not None else describe(decoded)
        raise ContractError(
            f"decoder {_name(decoder)} returned {got}; expected {{task: (B, {dim}, h, w)}} for the tasks {list(tasks)}"
        )
    for task in tasks:
        value = decoded[task]
        if not (isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[:2] == (batch, dim)):
            raise ContractError(
                f"decoder {_name(decoder)}: {task!r} is {describe(value)}; expected ({batch}, {dim}, h, w), "
                "the encoder's dim channels per task"
            )
