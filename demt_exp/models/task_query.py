"""Fast task-query and task-interaction blocks for attention='official', all tasks in one batched op.

Same function as the plain formulation in `attention.py` / `degmix.py` (held against it in
float64 by tests/test_fast_paths.py); only the order of the linear algebra changes.
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
from torch.utils.checkpoint import checkpoint

from demt_exp.models.attention import compose_affine, linear_affine, projection_affine


def pixel_slices(count: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` of `count` pixel rows."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def pixel_major_tokens(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """T maps (B, C, h, w) -> (B*h*w, T, C) in one copy."""
    b, c, h, w = maps[0].shape
    return torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim=3).view(b * h * w, len(maps), c)


def stacked_norm(norms: Sequence[nn.LayerNorm]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task LayerNorm affines stacked as (T, 1, C) scale and shift."""
    return torch.stack([n.weight for n in norms]).unsqueeze(1), torch.stack([n.bias for n in norms]).unsqueeze(1)


def task_layer_norm(x: torch.Tensor, norms: Sequence[nn.LayerNorm]) -> torch.Tensor:
    """(T, M, C): LayerNorm with each task's own affine."""
    scale, shift = stacked_norm(norms)
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=norms[0].eps), scale)


def stacked_affine(maps: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task (W, b) stacked as (T, C_out, C_in), (T, 1, C_out)."""
    return torch.stack([w for w, _ in maps]), torch.stack([b for _, b in maps]).unsqueeze(1)


def fused_interaction(tokens: torch.Tensor, mha: nn.MultiheadAttention, mlp: nn.Sequential) -> torch.Tensor:
    """Official task interaction at one image: LN(Linear(out_proj(v_proj(x)))) with the 3 maps folded into one."""
    weight, bias = compose_affine(projection_affine(mha, 2), linear_affine(mha.out_proj), linear_affine(mlp[0]))
    return mlp[1](F.linear(tokens, weight, bias))


def pixel_attention(q: torch.Tensor, fused: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor) -> torch.Tensor:
    """Per-pixel multi-head attention of every task over the T fused features at its pixel.

    q (T, M, C) scaled queries, fused (M, T, C), wk and wv (T, heads, d, C): W_v,h (sum_s w_s f_s),
    (T, M, C) without the value bias. Its (T, heads, M, C) intermediates are the largest
    tensors of the decoder.
    """
    t, m, c = q.shape
    heads, d = wk.shape[1], wk.shape[2]
    q_keys = torch.matmul(q.view(t, m, heads, d).transpose(1, 2), wk)  # (T, H, M, C): W_k,h^T q_h
    weights = torch.einsum("thmc,msc->thms", q_keys, fused).softmax(dim=-1)
    mixed = torch.einsum("thms,msc->thmc", weights, fused)  # sum_s w_s f_s
    return torch.matmul(mixed, wv.transpose(-1, -2)).transpose(1, 2).reshape(t, m, c)  # W_v,h (...)


def recomputed_pixel_attention(
    q: torch.Tensor, fused: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, pixels: int
) -> torch.Tensor:
    """`pixel_attention` that saves only its inputs for backward and recomputes `pixels` pixels at a time.

    Attention within a pixel reads no other pixel, so each piece is its own checkpoint: the
    (T, heads, M, C) intermediates (about 1 GiB saved at batch 2, 448x576) never outlive the
    forward, and the backward holds one piece's at a time. The price is the piece's forward run
    again in backward.
    """
    # no random numbers are drawn inside, so no RNG state is saved and restored per piece
    pieces = [checkpoint(pixel_attention, q[:, s], fused[s], wk, wv, use_reentrant=False, preserve_rng_state=False)
              for s in pixel_slices(q.shape[1], pixels)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def demt_task_query(
    tokens: torch.Tensor,
    fused: torch.Tensor,
    queries: Sequence[nn.MultiheadAttention],
    mlps: Sequence[nn.Sequential],
    recompute_pixels: int | None = None,
) -> torch.Tensor:
    """tokens + LN(Linear(per-pixel MHA(tokens_t -> fused))) for every task: (M, T, C) -> (T, M, C).

    With `recompute_pixels` and gradients on, the attention is recomputed in backward in pieces
    of that many pixels (`recomputed_pixel_attention`)."""
    m, t, c = tokens.shape
    heads = queries[0].num_heads
    d = c // heads
    scale = d**-0.5
    wq, bq = stacked_affine([projection_affine(q, 0) for q in queries])
    wk = torch.stack([projection_affine(q, 1)[0] for q in queries]).view(t, heads, d, c)
    wv = torch.stack([projection_affine(q, 2)[0] for q in queries]).view(t, heads, d, c)
    # value bias -> out-projection -> first MLP layer: one affine map per task.
    wo, bo = stacked_affine(
        [compose_affine((None, projection_affine(q, 2)[1]), linear_affine(q.out_proj), linear_affine(p[0]))
         for q, p in zip(queries, mlps)]
    )
    own = tokens.transpose(0, 1)  # (T, M, C), task t's queries
    q = torch.baddbmm(bq * scale, own, wq.transpose(1, 2) * scale)  # (T, M, C)
    if recompute_pixels is not None and torch.is_grad_enabled():
        values = recomputed_pixel_attention(q, fused, wk, wv, recompute_pixels)
    else:
        values = pixel_attention(q, fused, wk, wv)
    out = torch.baddbmm(bo, values, wo.transpose(1, 2))
    return own + task_layer_norm(out, [p[1] for p in mlps])


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
