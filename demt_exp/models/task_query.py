"""Fast task-query and task-interaction blocks for attention='official', all tasks in one batched op.

Same function as the plain formulation in `attention.py` / `degmix.py` (held against it in
float64 by tests/unit/models/test_fast_paths.py); only the order of the linear algebra changes.
Tokens are laid out once, pixel-major, as (M = B*h*w, T, C) for all tasks; outputs are
(T, M, C), so each task's map is a channels-last (B, C, h, w) view without a copy.

DeMT per-pixel query of task t, head h, over the T fused features f_s at a pixel:
  logits_s = (W_k,h^T q_h) . f_s            (q_h . b_k,h is the same for every s: cancels in the softmax)
  output_h = W_v,h (sum_s w_s f_s) + b_v,h  (the weights sum to 1)
so keys and values are never projected for all T*N tokens per task (10.5 -> 4.2 GMAC per task).
DeGMix's query has no softmax, so k^T v is a sum over tokens: with the fused tokens normalised
once (the LayerNorm statistics are shared by norm_k and norm_v, only the affine differs), the
Gram matrix z^T z of each image gives every task's k^T v, and q -> k^T v -> proj -> Linear folds
into one C x C matrix per image and task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.attention import compose_affine, linear_affine, projection_affine
from demt_exp.models.linear import grouped_linear, linear


def pixel_major_tokens(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """T maps (B, C, h, w) -> (B*h*w, T, C) in one copy."""
    b, c, h, w = maps[0].shape
    return torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim=3).view(b * h * w, len(maps), c)


def stacked_norm(norms: Sequence[nn.LayerNorm]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task LayerNorm affines stacked as (T, C) scale and shift."""
    return torch.stack([n.weight for n in norms]), torch.stack([n.bias for n in norms])


def task_layer_norm(x: torch.Tensor, norms: Sequence[nn.LayerNorm], task_dim: int = 0) -> torch.Tensor:
    """LayerNorm over the channels with each task's own affine; the tasks lie along `task_dim`:
    (T, M, C) with 0, pixel-major (M, T, C) with 1."""
    scale, shift = stacked_norm(norms)
    if task_dim == 0:
        scale, shift = scale.unsqueeze(1), shift.unsqueeze(1)
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=norms[0].eps), scale)


def stacked_affine(maps: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task (W, b) stacked as (T, C_out, C_in), (T, 1, C_out)."""
    return torch.stack([w for w, _ in maps]), torch.stack([b for _, b in maps]).unsqueeze(1)


def fused_interaction(tokens: torch.Tensor, mha: nn.MultiheadAttention, mlp: nn.Sequential) -> torch.Tensor:
    """Official task interaction at one image before its LayerNorm mlp[1]: Linear(out_proj(v_proj(x))) with the
    3 maps folded into one. The decoder applies the LayerNorm inside the task query, so a recomputed query
    rebuilds the normalised map in backward instead of it being saved."""
    weight, bias = compose_affine(projection_affine(mha, 2), linear_affine(mha.out_proj), linear_affine(mlp[0]))
    return linear(tokens, weight, bias)


def pixel_attention(q: torch.Tensor, fused: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor) -> torch.Tensor:
    """Per-pixel multi-head attention of every task over the T fused features at its pixel.

    q (M, T*C) scaled queries and the result W_v,h (sum_s w_s f_s) (without the value bias) are
    pixel-major, task t, head h in columns t*C + h*d .. + d; fused (M, T, C); wk and wv
    (T, heads, d, C). Each (task, head) is one group of a grouped product (`grouped_linear`), and
    the per-pixel products are batched over pixels. Its (M, T*heads, C) intermediates are the
    largest tensors of the decoder.
    """
    m = q.shape[0]
    t, heads, d, c = wk.shape
    groups = t * heads
    q_keys = grouped_linear(q, wk.transpose(2, 3).reshape(groups * c, d), None, groups).view(
        m, groups, c
    )  # W_k,h^T q_h
    weights = torch.bmm(q_keys, fused.transpose(1, 2)).softmax(dim=-1)  # (M, T*H, S)
    mixed = torch.bmm(weights, fused).view(m, groups * c)  # sum_s w_s f_s
    return grouped_linear(mixed, wv.reshape(groups * d, c), None, groups)  # W_v,h (...)


def demt_task_query(
    tokens: torch.Tensor,
    fused: torch.Tensor,
    queries: Sequence[nn.MultiheadAttention],
    mlps: Sequence[nn.Sequential],
) -> torch.Tensor:
    """tokens + LN(Linear(per-pixel MHA(tokens_t -> fused))) for every task: (M, T, C) -> (T, M, C).

    The per-task projections run pixel-major, all tasks in one grouped product (`grouped_linear`)."""
    m, t, c = tokens.shape
    heads = queries[0].num_heads
    d = c // heads
    scale = d**-0.5
    wq, bq = stacked_affine([projection_affine(q, 0) for q in queries])
    wk = torch.stack([projection_affine(q, 1)[0] for q in queries]).view(t, heads, d, c)
    wv = torch.stack([projection_affine(q, 2)[0] for q in queries]).view(t, heads, d, c)
    # value bias -> out-projection -> first MLP layer: one affine map per task.
    wo, bo = stacked_affine(
        [
            compose_affine((None, projection_affine(q, 2)[1]), linear_affine(q.out_proj), linear_affine(p[0]))
            for q, p in zip(queries, mlps)
        ]
    )
    rows = tokens.reshape(m, t * c)  # task t's queries in columns t*C..(t+1)*C
    q = grouped_linear(rows, wq.reshape(t * c, c) * scale, bq.reshape(t * c) * scale, t)
    values = pixel_attention(q, fused, wk, wv)
    out = grouped_linear(values, wo.reshape(t * c, c), bo.reshape(t * c), t).view(m, t, c)
    normed = task_layer_norm(out, [p[1] for p in mlps], task_dim=1)
    return (tokens + normed).transpose(0, 1).contiguous()


def head_block_mask(dim: int, heads: int, like: torch.Tensor) -> torch.Tensor:
    """(C, C) ones on the per-head diagonal blocks: k^T v of multi-head attention is block diagonal."""
    head = torch.arange(dim, device=like.device) // (dim // heads)
    return (head[:, None] == head[None, :]).to(like.dtype)


def degmix_task_query(
    tokens: torch.Tensor, fused: torch.Tensor, batch: int, queries: Sequence[nn.Module], mlps: Sequence[nn.Sequential]
) -> torch.Tensor:
    """tokens + LN(Linear(AnyAttention(tokens_t, all fused tokens of the image))) without softmax: (T, M, C)."""
    m, t, c = tokens.shape
    heads = queries[0].heads
    scale = (c // heads) ** -0.5
    eps = queries[0].norm_k.eps
    z = F.layer_norm(fused, (c,), eps=eps).view(batch, -1, c)  # normalised context, shared by norm_k and norm_v
    count = z.shape[1]
    gram = z.transpose(1, 2) @ z  # (B, C, C)
    total = z.sum(dim=1)  # (B, C)
    gk, bk = (torch.stack([getattr(q.norm_k, a) for q in queries]) for a in ("weight", "bias"))  # (T, C)
    gv, bv = (torch.stack([getattr(q.norm_v, a) for q in queries]) for a in ("weight", "bias"))
    # (z gk + bk)^T (z gv + bv) summed over the image's tokens, per task: (B, T, C, C)
    sk = gk * total[:, None]  # (B, T, C)
    sv = gv * total[:, None]
    cross = (gk[None, :, :, None] * gram[:, None]) * gv[None, :, None, :]
    cross = cross + sk[..., None] * bv[None, :, None, :] + bk[None, :, :, None] * sv[:, :, None, :]
    cross = cross + count * (bk[:, :, None] * bv[:, None, :])
    wk = torch.stack([q.to_k.weight for q in queries])
    wv = torch.stack([q.to_v.weight for q in queries])
    kv = (wk @ cross @ wv.transpose(-1, -2)) * head_block_mask(c, heads, z)  # per-head k^T v, (B, T, C, C)
    wq = torch.stack([q.to_q.weight for q in queries])
    wp, bp = stacked_affine([compose_affine(linear_affine(q.proj), linear_affine(p[0])) for q, p in zip(queries, mlps)])
    # row vectors: y = nq Wq^T (s kv) Wp^T + bp, one (C, C) matrix per image and task
    fold = (scale * wq.transpose(-1, -2)) @ kv @ wp.transpose(-1, -2)  # (B, T, C, C)
    own = tokens.transpose(0, 1)  # (T, M, C)
    nq = task_layer_norm(own, [q.norm_q for q in queries]).reshape(t, batch, -1, c)
    out = torch.matmul(nq, fold.transpose(0, 1)).view(t, m, c) + bp
    return own + task_layer_norm(out, [p[1] for p in mlps])
