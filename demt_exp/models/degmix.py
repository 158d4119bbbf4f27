"""DeGMix decoder: DeMT's task interaction, un-normalised task-query attention, shared channel gate.

SPEC 1.6. The released task query ("AnyAttention") has no softmax: O = s q (k^T v), computed
here in that associative form so it is linear in the number of tokens. The released code adds
batch element 0's query result to every image (SPEC 8 item 4); here each image uses its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.attention import merge_heads, pooled_tokens, split_heads
from demt_exp.models.decoder import AttentionMode, TaskAwareDecoder, token_maps
from demt_exp.models.lean_linear import lean_linear
from demt_exp.models.task_query import degmix_task_query


class LinearTaskAttention(nn.Module):
    """AnyAttention: LayerNorm + bias-free projection of q, k, v; attention without softmax by default."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def project(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q (B, H, Nq, d), k and v (B, H, Nk, d)."""
        q = split_heads(self.to_q(self.norm_q(query)), self.heads)
        k = split_heads(self.to_k(self.norm_k(context)), self.heads)
        v = split_heads(self.to_v(self.norm_v(context)), self.heads)
        return q, k, v

    def forward(self, query: torch.Tensor, context: torch.Tensor, softmax: bool = False) -> torch.Tensor:
        q, k, v = self.project(query, context)
        if softmax:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            scale = q.shape[-1] ** -0.5
            out = (q * scale) @ (k.transpose(-2, -1) @ v)  # associative: O(N d^2), never N_q x N_k
        return self.proj(merge_heads(out))


class ChannelGate(nn.Module):
    """sGATE: GLU-style channel-gated MLP with a residual, one instance shared by all tasks (SPEC 1.6.3).

    The official "spatial gating unit" projects over channels with a 256x256 kernel-1 conv that
    only works for hidden = 512; here the gate width follows `hidden` (gate starts as all ones).
    """

    def __init__(self, dim: int = 256, hidden: int = 512) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"decoder.gate_hidden={hidden}; expected an even width (split into value and gate)")
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.gate_norm = nn.LayerNorm(hidden // 2)
        self.gate_proj = nn.Linear(hidden // 2, hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)
        nn.init.zeros_(self.gate_proj.weight)
        nn.init.ones_(self.gate_proj.bias)
        self.fast = True  # False: the plain gate, which saves both LayerNorms' outputs for backward too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            value, gate = self.act(self.fc1(self.norm(x))).chunk(2, dim=-1)
            return x + self.fc2(value * self.gate_proj(self.gate_norm(gate)))
        # each LayerNorm -> linear pair saves only the LayerNorm's input (models/lean_linear.py)
        value, gate = self.act(lean_linear(x, self.norm, self.fc1)).chunk(2, dim=-1)
        return x + self.fc2(value * lean_linear(gate, self.gate_norm, self.gate_proj))


class GatedTaskDecoder(TaskAwareDecoder):
    """DeGMix: task interaction (2 heads), linear task-query attention over all fused tokens, shared gate.

    attention='official' is the released computation (per-token linear interaction, no softmax
    in the task query), batch independent. 'global' is the paper's softmax attention for both
    blocks, with `kv_stride` pooling of keys and values.
    """

    pixel_separable = False  # every pixel's query reads the k^T v of its whole image

    def __init__(
        self,
        tasks: Sequence[str],
        dim: int = 256,
        fusion_heads: int = 2,
        query_heads: int = 2,
        attention: AttentionMode = "official",
        kv_stride: int = 1,
        gate_hidden: int = 512,
        bottleneck_divisor: int = 8,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            tasks, dim, fusion_heads, query_heads, attention, kv_stride, bottleneck_divisor, activation_checkpointing
        )
        self.gate = ChannelGate(dim, gate_hidden)

    def build_queries(self, dim: int, heads: int) -> nn.ModuleDict:
        return nn.ModuleDict({t: LinearTaskAttention(dim, heads) for t in self.tasks})

    def query_all(self, tokens: torch.Tensor, interaction: torch.Tensor, batch: int) -> torch.Tensor:
        queries = [self.task_queries[t] for t in self.tasks]
        fused = self.fusion_mlp[1](interaction)
        return degmix_task_query(tokens, fused, batch, queries, [self.query_mlps[t] for t in self.tasks])

    def query(self, task: str, tokens: torch.Tensor, fused: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, t, n, c = fused.shape
        if self.attention == "official":
            return self.task_queries[task](tokens, fused.reshape(b, t * n, c))
        context = pooled_tokens(token_maps(fused, size), self.kv_stride)
        return self.task_queries[task](tokens, context, softmax=True)

    def refine(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gate(tokens)
