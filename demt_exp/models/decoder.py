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
from demt_exp.models.recompute import recompute_in_backward, wants_recompute
from demt_exp.models.task_query import (
    demt_task_query,
    fused_interaction,
    pixel_major_tokens,
)

AttentionMode = Literal["official", "global"]
ATTENTION_MODES: tuple[str, ...] = ("official", "global")
QUERY_CHUNK_PIXELS = 4096  # pixels per piece of the per-pixel task query: a (T, H, 4096, C) fp32 piece is 64 MiB


def linear_norm(dim: int) -> nn.Sequential:
    """Linear(dim, dim) + LayerNorm(dim): the official `smlp` / `smlp2` blocks."""
    return nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C), row-major."""
    return x.flatten(2).transpose(1, 2)


def token_maps(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, h*w, C) -> (B, T, C, h, w)."""
    b, t, _, c = tokens.shape
    return tokens.transpose(2, 3).reshape(b, t, c, *size)


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
    `bottleneck_divisor` sets the width of the task heads that follow, C_in // divisor.
    `fast` (default) computes attention='official' with the batched rewrites of `task_query.py`;
    `fast = False` runs the plain formulation (the reference the rewrites are tested against).
    `activation_checkpointing` recomputes the task-query block in the backward pass.
    DeMT's official query attends within each pixel, so without gradients and when recomputed
    it runs on `query_chunk_pixels` pixels at a time (each piece recomputed on its own): its
    (pixels, T*heads, C) intermediates never exist for the whole map at once.
    `recompute_query` (default) recomputes that per-pixel task query (projections, attention,
    MLP and LayerNorm) in backward also without checkpointing, saving only its inputs (about
    1.5 GiB less saved at batch 2, 448x576, for its forward run again); `False` saves its
    activations. Decoders whose query reads the whole image (`pixel_separable = False`) ignore it.
    """

    pixel_separable = True  # the fast task query of one pixel reads no other pixel

    def __init__(
        self,
        tasks: Sequence[str],
        dim: int = 256,
        fusion_heads: int = 4,
        query_heads: int = 4,
        attention: AttentionMode = "official",
        kv_stride: int = 1,
        bottleneck_divisor: int = 8,
        activation_checkpointing: bool = False,
        recompute_query: bool = True,
    ) -> None:
        super().__init__()
        check_attention_args(attention, kv_stride)
        self.fast = True
        self.activation_checkpointing = activation_checkpointing
        self.recompute_query = recompute_query
        self.tasks = tuple(tasks)
        self.bottleneck_divisor = bottleneck_divisor  # heads' width = floor(C_in / 8) officially (SPEC 1.4)
        self.attention = attention
        self.kv_stride = kv_stride
        self.query_chunk_pixels = QUERY_CHUNK_PIXELS
        self.task_fusion = nn.MultiheadAttention(dim, fusion_heads)
        self.fusion_mlp = linear_norm(dim)
        self.task_queries = self.build_queries(dim, query_heads)
        self.query_mlps = nn.ModuleDict({t: linear_norm(dim) for t in self.tasks})

    def build_queries(self, dim: int, heads: int) -> nn.ModuleDict:
        """One attention module per task for the task-query block."""
        return nn.ModuleDict({t: nn.MultiheadAttention(dim, heads) for t in self.tasks})

    def fuse(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Task interaction on (B, T, N, C) task tokens -> fused (B, T, N, C)."""
        if self.attention == "official":
            return self.fusion_mlp(value_output_map(self.task_fusion, tokens))
        b, t, n, c = tokens.shape
        context = pooled_tokens(token_maps(tokens, size), self.kv_stride)
        fused = global_attention(self.task_fusion, tokens.reshape(b, t * n, c), context)
        return self.fusion_mlp(fused).view(b, t, n, c)

    def query(self, task: str, tokens: torch.Tensor, fused: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Task query: (B, N, C) tokens of `task` read the fused (B, T, N, C) tokens."""
        if self.attention == "official":
            return per_pixel_task_attention(self.task_queries[task], tokens, fused)
        return global_attention(self.task_queries[task], tokens, pooled_tokens(token_maps(fused, size), self.kv_stride))

    def refine(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-task token refinement after the query residual (none in DeMT)."""
        return tokens

    def query_all(self, tokens: torch.Tensor, interaction: torch.Tensor, batch: int) -> torch.Tensor:
        """Fast task query of every task with the residual: (M, T, C) tokens and the task interaction before its
        LayerNorm -> (T, M, C)."""
        queries = [self.task_queries[t] for t in self.tasks]
        fused = self.fusion_mlp[1](interaction)
        return demt_task_query(tokens, fused, queries, [self.query_mlps[t] for t in self.tasks])

    def recomputes_query(self) -> bool:
        """Whether this forward recomputes the task query in backward instead of saving its activations."""
        return wants_recompute(self.activation_checkpointing or (self.recompute_query and self.pixel_separable))

    def query_pieces(self, tokens: torch.Tensor, interaction: torch.Tensor, batch: int) -> torch.Tensor:
        """`query_all` over the whole map, or piece by piece where that bounds memory (see the class)."""
        recompute = self.recomputes_query()
        if not self.pixel_separable or (torch.is_grad_enabled() and not recompute):
            size = tokens.shape[0]  # whole map: autograd would keep every piece's intermediates anyway
        else:
            size = self.query_chunk_pixels
        # split, not tokens[a:b]: each slice would backpropagate a zero-filled (M, T, C) gradient
        pieces = [
            recompute_in_backward(self.task_queries, self.query_all, tokens_piece, interaction_piece, batch)
            if recompute
            else self.query_all(tokens_piece, interaction_piece, batch)
            for tokens_piece, interaction_piece in zip(tokens.split(size), interaction.split(size))
        ]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.fast and self.attention == "official":
            return self.forward_fast(features)
        return self.forward_plain(features)

    def forward_fast(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official attention, all tasks batched; outputs are channels-last views of one (T, M, C) tensor."""
        b, c, h, w = features[self.tasks[0]].shape
        tokens = pixel_major_tokens([features[t] for t in self.tasks])
        interaction = fused_interaction(tokens, self.task_fusion, self.fusion_mlp)
        out = self.refine(self.query_pieces(tokens, interaction, b))
        # unbind, not out[i]: indexing backpropagates a zero-filled (T, M, C) gradient per task, summed
        return {t: o.view(b, h, w, c).permute(0, 3, 1, 2) for t, o in zip(self.tasks, out.unbind(0))}

    def forward_plain(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The plain formulation: one task at a time, keys and values projected for every token."""
        b, c, h, w = features[self.tasks[0]].shape
        tokens = torch.stack([to_tokens(features[t]) for t in self.tasks], dim=1)
        fused = self.fuse(tokens, (h, w))
        out = {}
        for i, task in enumerate(self.tasks):
            own = tokens[:, i]
            refined = self.refine(own + self.query_mlps[task](self.query(task, own, fused, (h, w))))
            out[task] = refined.transpose(1, 2).reshape(b, c, h, w)
        return out
