"""Plain ViT backbone: timm's parameters, the DeGMix (mmseg-style) forward semantics (SPEC 1.2).

The official DeGMix ViT differs from timm's classifier in ways that matter for dense prediction:
the 16x16 patch conv has no bias and the input is zero-padded bottom/right to a multiple of 16
("corner" padding); the learned position table is sized for 512x512 (32x32 grid + class token)
and resized bicubically to the actual grid; LayerNorm eps is 1e-5; there is no final norm; four
intermediate layers are returned as stride-16 NCHW maps without the class token. Stochastic depth,
when enabled, acts on the MLP branch only, as mmseg's encoder layer wires it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from torch import nn

from demt_exp.models.state_dict import BackboneState
from demt_exp.models.timm_body import create_timm_body

VIT_VARIANTS: dict[str, str] = {
    "vit_b": "vit_base_patch16_224",
    "vit_l": "vit_large_patch16_224",
}

# Layers whose outputs are returned (0-based): DeGMix hard-codes (2, 5, 8, 11) for ViT-B;
# ViT-L, broken in the official code, gets the same evenly spaced quarters of its 24 layers.
DEFAULT_OUT_INDICES: dict[str, tuple[int, ...]] = {
    "vit_b": (2, 5, 8, 11),
    "vit_l": (5, 11, 17, 23),
}

PATCH_SIZE = 16
POS_GRID = 32  # the position table is sized for 512x512 inputs


def _bias_free_patch_embed(**kwargs: Any) -> PatchEmbed:
    """timm PatchEmbed with the bias forced off (timm passes `bias` explicitly, so a partial would lose)."""
    kwargs["bias"] = False
    return PatchEmbed(**kwargs)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], table_grid: tuple[int, int]) -> torch.Tensor:
    """mmseg resize_pos_embed: keep the class entry, resize the (h, w) table bicubically (align_corners=False)."""
    table_h, table_w = table_grid
    cls_entry = pos_embed[:, :1]
    table = pos_embed[:, -table_h * table_w :].reshape(1, table_h, table_w, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    return torch.cat((cls_entry, table.flatten(2).transpose(1, 2)), dim=1)


def grid_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], table_grid: tuple[int, int]) -> torch.Tensor:
    """Position embedding for a token grid, resized only when the token count differs (as the official code).

    A grid with the table's token count but another shape (e.g. 16x64 for a 32x32 table) gets the
    table unchanged, flattened in the table's own row order.
    """
    if grid[0] * grid[1] == table_grid[0] * table_grid[1]:
        return pos_embed
    return resize_pos_embed(pos_embed, grid, table_grid)


def _check_out_indices(out_indices: Sequence[int], depth: int) -> tuple[int, ...]:
    """Sorted, unique, in-range layer indices (a Hydra ListConfig is accepted)."""
    indices = tuple(int(i) for i in out_indices)
    if not indices or list(indices) != sorted(set(indices)) or indices[0] < 0 or indices[-1] >= depth:
        raise ValueError(f"out_indices must be increasing layer indices in [0, {depth}), got {indices}")
    return indices


class VitBackbone(nn.Module):
    """ViT feature extractor returning len(out_indices) maps of shape (B, C, ceil(H/16), ceil(W/16))."""

    def __init__(
        self,
        variant: str = "vit_b",
        drop_path_rate: float = 0.0,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        body = create_timm_body(
            VIT_VARIANTS,
            variant,
            "ViT",
            num_classes=0,
            img_size=POS_GRID * PATCH_SIZE,
            final_norm=False,
            embed_layer=_bias_free_patch_embed,
            norm_layer=functools.partial(nn.LayerNorm, eps=1e-5),
            drop_path_rate=drop_path_rate,
        )
        self.patch_embed = body.patch_embed
        self.cls_token = body.cls_token
        self.pos_embed = body.pos_embed
        self.blocks = body.blocks
        for block in self.blocks:
            block.drop_path1 = nn.Identity()  # mmseg: the attention branch has no stochastic depth
        self.out_indices = _check_out_indices(
            DEFAULT_OUT_INDICES[variant] if out_indices is None else out_indices, len(self.blocks)
        )
        self.embed_dim: int = body.embed_dim
        self.out_channels: list[int] = [self.embed_dim] * len(self.out_indices)
        self.strides: list[int] = [PATCH_SIZE] * len(self.out_indices)
        self.table_grid: tuple[int, int] = (POS_GRID, POS_GRID)

    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Corner-padded patch tokens with class token and position embedding: (B, 1 + h*w, C), (h, w)."""
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % PATCH_SIZE, -width % PATCH_SIZE
        x = self.patch_embed.proj(F.pad(image, (0, pad_w, 0, pad_h)))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + grid_pos_embed(self.pos_embed, grid, self.table_grid), grid

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x, (grid_h, grid_w) = self.embed(image)
        features = []
        for index, block in enumerate(self.blocks[: self.out_indices[-1] + 1]):
            x = block(x)
            if index in self.out_indices:
                tokens = x[:, 1:]
                features.append(tokens.reshape(x.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous())
        return features


def vit_grid(height: int, width: int) -> tuple[int, int]:
    """Token grid of an input size: ceil(H/16) x ceil(W/16) after corner padding."""
    return math.ceil(height / PATCH_SIZE), math.ceil(width / PATCH_SIZE)


# ----------------------------------------------------------------------------- checkpoints

# mmseg ViT (UperNet ViT-B/16 "ln_mln") -> timm names, per encoder layer.
MMSEG_LAYER_NAMES: tuple[tuple[str, str], ...] = (
    ("ln1.", "norm1."),
    ("attn.attn.in_proj_weight", "attn.qkv.weight"),  # nn.MultiheadAttention stacks q, k, v as timm's qkv
    ("attn.attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.attn.out_proj.", "attn.proj."),
    ("ln2.", "norm2."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
)
PATCH_BIAS_REASON = "patch-embedding bias (the DeGMix ViT has none, SPEC 1.2)"
FINAL_NORM_REASON = "final norm (the DeGMix ViT has none, SPEC 1.2)"


def mmseg_layer_key(key: str) -> str:
    """`layers.i.<mmseg name>` -> `blocks.i.<timm name>`."""
    match = re.match(r"^layers\.(\d+)\.(.*)$", key)
    if match is None:
        raise ValueError(f"unexpected mmseg ViT key {key!r}")
    index, rest = match.groups()
    for old, new in MMSEG_LAYER_NAMES:
        if rest.startswith(old):
            return f"blocks.{index}.{new}{rest[len(old) :]}"
    raise ValueError(f"unexpected mmseg ViT key {key!r}")


def fit_pos_embed(pos_embed: torch.Tensor, table_grid: tuple[int, int]) -> torch.Tensor:
    """A square (1, 1 + n*n, C) table of another resolution, resized bicubically to ours (as mmseg's init)."""
    tokens = pos_embed.shape[1] - 1
    if tokens == table_grid[0] * table_grid[1]:
        return pos_embed
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)}: expected a class token and a square grid")
    return resize_pos_embed(pos_embed, table_grid, (side, side))


def checkpoint_filter_fn(state: Mapping[str, torch.Tensor], backbone: VitBackbone) -> BackboneState:
    """mmseg UperNet ViT, timm ImageNet ViT, or our own state dict -> our VitBackbone keys.

    Both foreign layouts lose what the DeGMix ViT does not have (the patch-embedding bias and the
    final norm; the official non-strict load drops them the same way) and the classifier; a
    position table of another grid (e.g. timm's 14x14 at 224) is resized bicubically to 32x32.
    """
    mmseg = any(k.startswith("layers.") for k in state)
    converted: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    for key, value in state.items():
        if key in ("patch_embed.projection.bias", "patch_embed.proj.bias"):
            dropped[PATCH_BIAS_REASON] += 1
        elif key.startswith(("ln1.", "norm.", "fc_norm.")):
            dropped[FINAL_NORM_REASON] += 1
        elif key.startswith("head."):
            dropped["ImageNet classifier"] += 1
        elif key == "patch_embed.projection.weight":
            converted["patch_embed.proj.weight"] = value
        elif key == "pos_embed":
            converted[key] = fit_pos_embed(value, backbone.table_grid)
        elif mmseg and key.startswith("layers."):
            converted[mmseg_layer_key(key)] = value
        else:
            converted[key] = value
    return BackboneState("mmseg_backbone" if mmseg else "timm", converted, dropped)
