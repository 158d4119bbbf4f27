"""Swin window attention and its output projection, saving q, k, v and one log-sum-exp per row for backward.

Plain autograd keeps every window's (heads, N, N) softmax output for backward: with 7x7 windows that is 1.53
values per channel and token in every Swin block (3 x 49 per token against 96 channels in Swin-T's first
stage), besides q, k and v (three copies the products make) and the attention output the projection reads.
`attend` saves the qkv projection's output instead of those copies (the same bytes) and each row's
log-sum-exp, and backward recomputes the probabilities as exp(q k^T + bias + mask - lse), as flash attention
does, and from them the attention output for the projection's weight gradient: two (N x N) products per window
and head more, a third of the attention's own train-step products (under 1% of a Swin step). The relative
position bias and the shift mask stay in their small shapes; PyTorch's memory-efficient SDPA kernel would
instead take (and save) them expanded to every window, as large as the probabilities themselves. Same function
(held to timm's attention in float64); autocast computes as in the forward: the products in the dtype the qkv
projection gave, softmax in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from demt_exp.models.attention import merge_heads, split_heads
from demt_exp.models.lean_linear import autocast_dtype


def _logits(q: Tensor, k: Tensor, bias: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """(q * scale) k^T + bias (+ mask per window), timm's ops in timm's order; (windows, heads, N, N)."""
    logits = (q * scale) @ k.transpose(-2, -1) + bias
    if mask is None:
        return logits
    _, heads, tokens, _ = logits.shape
    shifted = logits.view(-1, mask.shape[0], heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
    return shifted.view(-1, heads, tokens, tokens)


def _split(qkv: Tensor, heads: int) -> list[Tensor]:
    """(windows, N, 3C) -> q, k, v as (windows, heads, N, C / heads) views."""
    windows, tokens, _ = qkv.shape
    return list(qkv.view(windows, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0))


class _WindowAttention(torch.autograd.Function):
    """proj(attention(qkv)); backward in aten ops alone (no autograd.grad), so torch.compile traces it without a
    graph break."""

    @staticmethod
    def forward(
        ctx: Any,
        qkv: Tensor,
        bias: Tensor,
        mask: Tensor | None,
        weight: Tensor,
        proj_bias: Tensor | None,
        heads: int,
        scale: float,
    ) -> Tensor:
        q, k, v = _split(qkv, heads)
        logits = _logits(q, k, bias, mask, scale)
        lse = logits.logsumexp(-1, keepdim=True)
        ctx.heads, ctx.scale, ctx.has_proj_bias = heads, scale, proj_bias is not None
        ctx.compute = autocast_dtype(qkv.device.type)
        ctx.save_for_backward(qkv, bias, mask, lse, weight)
        out = merge_heads(logits.softmax(-1) @ v)
        return F.linear(out, weight, proj_bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        qkv, bias, mask, lse, weight = ctx.saved_tensors
        need_qkv, need_bias, _, need_weight, need_proj_bias = ctx.needs_input_grad[:5]
        compute = ctx.compute or qkv.dtype
        q, k, v = (part.to(compute) for part in _split(qkv, ctx.heads))
        logits = _logits(q, k, bias, mask, ctx.scale)
        probs = (logits - lse).exp()  # the forward's softmax
        grad = grad.to(compute)
        rows = grad.flatten(0, -2)
        grad_weight = grad_proj_bias = None
        if need_weight:  # the projection's input, rebuilt: one (N x N) x (N x d) product per window and head
            out = merge_heads(probs.to(compute) @ v)
            grad_weight = rows.t().mm(out.flatten(0, -2)).to(weight.dtype)
        if need_proj_bias and ctx.has_proj_bias:
            grad_proj_bias = rows.sum(0).to(weight.dtype)
        if not (need_qkv or need_bias):
            return None, None, None, grad_weight, grad_proj_bias, None, None
        grad = split_heads(grad.matmul(weight.to(compute)), ctx.heads)
        grad_v = probs.to(compute).transpose(-2, -1) @ grad
        grad_probs = (grad @ v.transpose(-2, -1)).to(probs.dtype)
        grad_logits = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_bias = grad_logits.sum(0, keepdim=True).to(bias.dtype) if need_bias else None
        grad_logits = grad_logits.to(compute)
        grad_q = (grad_logits @ k) * ctx.scale
        grad_k = grad_logits.transpose(-2, -1) @ (q * ctx.scale)
        grad_qkv = torch.stack([grad_q, grad_k, grad_v]).permute(1, 3, 0, 2, 4).reshape(qkv.shape).to(qkv.dtype)
        return grad_qkv, grad_bias, None, grad_weight, grad_proj_bias, None, None


def lean_attention(attn: nn.Module) -> bool:
    """Whether `attend` may stand in for timm's `attn`: a backward follows, no attention dropout is drawn, and
    timm is not set to its SDPA route."""
    dropout = attn.attn_drop.p != 0 and attn.training
    return torch.is_grad_enabled() and not dropout and not getattr(attn, "fused_attn", False)


def attend(attn: nn.Module, qkv: Tensor, mask: Tensor | None) -> Tensor:
    """timm WindowAttention `attn` (attention, projection) from its qkv projection's output (windows, N, 3C),
    saving q, k, v and the log-sum-exp for backward; (windows, N, C)."""
    bias, proj = attn._get_rel_pos_bias(), attn.proj
    out = _WindowAttention.apply(qkv, bias, mask, proj.weight, proj.bias, attn.num_heads, attn.scale)
    return attn.proj_drop(out)


def window_attention(attn: nn.Module, windows: Tensor, mask: Tensor | None, fast: bool = True) -> Tensor:
    """timm WindowAttention `attn` on (windows, N, C) tokens; fast: through `attend` where it may run."""
    if fast and lean_attention(attn):
        return attend(attn, attn.qkv(windows), mask)
    return attn(windows, mask=mask)
