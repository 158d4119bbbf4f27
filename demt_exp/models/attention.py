"""Attention computations on nn.MultiheadAttention parameters, batch-first and per image.

The official heads hand batch-first tensors to a sequence-first nn.MultiheadAttention
(SPEC 1.5.4). At one image per GPU, which produced the published numbers, that computes:
  * task interaction: a per-token linear map, out_proj(v_proj(x));
  * task query: for each pixel, the task-t feature attends over the T fused task features
    at that same pixel (softmax, scale 1/sqrt(head_dim)).
`official` reproduces exactly this for every image of any batch. `global` computes the
attention the paper describes: self-attention over all task tokens and cross-attention of
each task's tokens to all fused tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def in_projection(mha: nn.MultiheadAttention, x: torch.Tensor, which: int) -> torch.Tensor:
    """Project with the q (0), k (1) or v (2) slice of the packed in-projection."""
    return F.linear(x, *projection_affine(mha, which))


def value_output_map(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention over a single key: the softmax is 1, leaving out_proj(v_proj(x)) per token."""
    return mha.out_proj(in_projection(mha, x, 2))


Affine = tuple[torch.Tensor | None, torch.Tensor | None]


def compose_affine(*maps: Affine) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chained affine maps x -> W_n(...(W_1 x + b_1)...) + b_n as one (W, b), first map first.

    A weight of None is the identity (a bias alone). Computed from the parameters at every
    call, so autograd carries the gradients of every factor exactly.
    """
    weight, bias = maps[0]
    for w, b in maps[1:]:
        if bias is not None:
            bias = F.linear(bias, w, b)
        else:
            bias = b
        weight = w if weight is None else w @ weight
    if weight is None:
        raise ValueError("compose_affine needs at least one weight")
    return weight, bias


def projection_affine(mha: nn.MultiheadAttention, which: int) -> Affine:
    """(W, b) of the q (0), k (1) or v (2) slice of the packed in-projection."""
    dim = mha.embed_dim
    bias = None if mha.in_proj_bias is None else mha.in_proj_bias[which * dim : (which + 1) * dim]
    return mha.in_proj_weight[which * dim : (which + 1) * dim], bias


def linear_affine(linear: nn.Linear) -> Affine:
    return linear.weight, linear.bias


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., N, C) -> (..., heads, N, C / heads)."""
    *lead, n, c = x.shape
    return x.view(*lead, n, heads, c // heads).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, d) -> (..., N, heads * d)."""
    *lead, h, n, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, n, h * d)


def per_pixel_task_attention(mha: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query (B, N, C) attends, pixel by pixel, over keys (B, T, N, C) of the T tasks at that pixel."""
    heads = mha.num_heads
    q = split_heads(in_projection(mha, query, 0), heads)  # (B, H, N, d)
    k = split_heads(in_projection(mha, keys, 1), heads)  # (B, T, H, N, d)
    v = split_heads(in_projection(mha, keys, 2), heads)
    scale = q.shape[-1] ** -0.5
    logits = torch.einsum("bhnd,bthnd->bhnt", q * scale, k)
    weights = logits.softmax(dim=-1)
    out = torch.einsum("bhnt,bthnd->bhnd", weights, v)
    return mha.out_proj(merge_heads(out))


def global_attention(mha: nn.MultiheadAttention, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Standard batch-first multi-head attention of query (B, Nq, C) over context (B, Nk, C)."""
    heads = mha.num_heads
    q = split_heads(in_projection(mha, query, 0), heads)
    k = split_heads(in_projection(mha, context, 1), heads)
    v = split_heads(in_projection(mha, context, 2), heads)
    out = F.scaled_dot_product_attention(q, k, v)
    return mha.out_proj(merge_heads(out))


def pooled_tokens(maps: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, T, C, h, w) -> (B, T * h' * w', C) tokens, average-pooled by `stride` (ceil mode)."""
    b, t, c, h, w = maps.shape
    flat = maps.reshape(b * t, c, h, w)
    if stride > 1:
        flat = F.avg_pool2d(flat, stride, stride, ceil_mode=True, count_include_pad=False)
    return flat.flatten(2).transpose(1, 2).reshape(b, -1, c)
