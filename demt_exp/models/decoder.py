"""DeMT decoder: task interaction block and per-task task-query block (SPEC 1.5.1 steps 3-4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from demt_exp.models.attention import (
    global_attention,
    per_pixel_task_attention,
    pooled_tokens,
    value_output_map,
)

AttentionMode = Literal["official", "global"]
ATTENTION_MODES: tuple[str, ...] = ("official", "global")


def linear_norm(dim: int) -> nn.Sequential:
    """Linear(dim, dim) + LayerNorm(dim): the official `smlp` / `smlp2` blocks."""
    return nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C), row-major."""
    return x.flatten(2).transpose(1, 2)


def check_attention_args(attention: str, kv_stride: int) -> None:
    """Fail at build time on an unknown attention mode or a bad key/value stride."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"decoder.attention={attention!r}; expected one of {ATTENTION_MODES}")
    if kv_stride < 1:
        raise ValueError(f"decoder.kv_stride={kv_stride}; expected an integer >= 1")


class TaskAwareDecoder(nn.Module):
    """{task: (B, C, h, w)} -> {task: (B, C, h, w)}: fuse all tasks, then let each task query the fusion.

    attention='official' (default) is the effective behaviour of the released code at one
    image per GPU, computed per image so batch composition never matters. 'global' is the
    paper's attention; `kv_stride` average-pools keys/values so it fits in memory at stride 4.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        dim: int = 256,
        fusion_heads: int = 4,
        query_heads: int = 4,
        attention: AttentionMode = "official",
        kv_stride: int = 1,
    ) -> None:
        super().__init__()
        check_attention_args(attention, kv_stride)
        self.tasks = tuple(tasks)
        self.attention = attention
        self.kv_stride = kv_stride
        self.task_fusion = nn.MultiheadAttention(dim, fusion_heads)
        self.fusion_mlp = linear_norm(dim)
        self.task_queries = nn.ModuleDict({t: nn.MultiheadAttention(dim, query_heads) for t in self.tasks})
        self.query_mlps = nn.ModuleDict({t: linear_norm(dim) for t in self.tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b, c, h, w = features[self.tasks[0]].shape
        tokens = {t: to_tokens(features[t]) for t in self.tasks}
        if self.attention == "official":
            fused = torch.stack([self.fusion_mlp(value_output_map(self.task_fusion, tokens[t])) for t in self.tasks], 1)
            queried = {t: per_pixel_task_attention(self.task_queries[t], tokens[t], fused) for t in self.tasks}
        else:
            maps = torch.stack([features[t] for t in self.tasks], dim=1)
            all_tokens = torch.cat([tokens[t] for t in self.tasks], dim=1)
            fused = self.fusion_mlp(global_attention(self.task_fusion, all_tokens, pooled_tokens(maps, self.kv_stride)))
            fused_maps = fused.view(b, len(self.tasks), h, w, c).permute(0, 1, 4, 2, 3)
            context = pooled_tokens(fused_maps, self.kv_stride)
            queried = {t: global_attention(self.task_queries[t], tokens[t], context) for t in self.tasks}
        return {
            t: (tokens[t] + self.query_mlps[t](queried[t])).transpose(1, 2).reshape(b, c, h, w) for t in self.tasks
        }
