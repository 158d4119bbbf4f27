"""The official DeMT backbone, mmseg's Swin Transformer, in its parameter layout and computation (SPEC 1.2):
pad to a multiple of 4 before the patch conv; window attention pads to a multiple of the window, then shifts,
masks with -100 and crops back; Unfold-based patch merging. Built by `official_model.OfficialModel`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SWIN_SIZES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_l": (192, (2, 2, 18, 2), (6, 12, 24, 48)),  # mmseg's ADE20K UperNet Swin-L: window 12
}
WINDOW = 7
HEAD_DIM = 256  # the DeMT head width


# ----------------------------------------------------------------------------- mmseg Swin


def double_step_seq(step1: int, len1: int, step2: int, len2: int) -> torch.Tensor:
    """mmseg helper: (1, len1*len2) grid of i*step1 + j*step2."""
    seq1 = torch.arange(0, step1 * len1, step1)
    seq2 = torch.arange(0, step2 * len2, step2)
    return (seq1[:, None] + seq2[None, :]).reshape(1, -1)


def mmseg_relative_position_index(window: int) -> torch.Tensor:
    """Relative position index the way mmseg's WindowMSA builds it."""
    coords = double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window, window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B * nW, window, window, C) -> (B, H, W, C)."""
    window = windows.shape[1]
    b = int(windows.shape[0] / (h * w / window / window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class PatchEmbed(nn.Module):
    """Zero-pad bottom/right to a multiple of the patch, patch conv, LayerNorm over tokens."""

    def __init__(self, in_channels: int, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        if h % self.patch or w % self.patch:
            x = F.pad(x, (0, (self.patch - w % self.patch) % self.patch, 0, (self.patch - h % self.patch) % self.patch))
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class WindowMSA(nn.Module):
    """Window self-attention with a relative position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", mmseg_relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class ShiftWindowMSA(nn.Module):
    """Pad to whole windows, cyclic shift with a -100 mask, window attention, unshift, crop."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.w_msa = WindowMSA(dim, heads, window)

    def shift_mask(self, hp: int, wp: int) -> torch.Tensor:
        img_mask = torch.zeros(1, hp, wp, 1)
        slices = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        count = 0
        for hs in slices:
            for ws in slices:
                img_mask[:, hs, ws, :] = count
                count += 1
        mask_windows = window_partition(img_mask, self.window).view(-1, self.window * self.window)
        mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, query: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, _, c = query.shape
        h, w = hw
        x = query.view(b, h, w, c)
        pad_r = (self.window - w % self.window) % self.window
        pad_b = (self.window - h % self.window) % self.window
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self.shift_mask(hp, wp).to(x)
        windows = window_partition(x, self.window).view(-1, self.window**2, c)
        windows = self.w_msa(windows, mask=mask).view(-1, self.window, self.window, c)
        x = window_reverse(windows, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x[:, :h, :w, :].contiguous().view(b, h * w, c)


class FFN(nn.Module):
    """mmcv FFN: layers = [[Linear, GELU, Dropout], Linear, Dropout], residual added by the FFN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)), nn.Linear(hidden, dim), nn.Dropout(0.0)
        )

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.layers(x)


class SwinBlock(nn.Module):
    """Pre-norm block; drop path is 0 at evaluation."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, heads, window, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x), identity=x)


class PatchMerging(nn.Module):
    """Corner-pad to even size, 2x2 nn.Unfold (channel c*4 + kh*2 + kw), LayerNorm(4c), Linear(4c -> 2c)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sampler = nn.Unfold(kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c).permute(0, 3, 1, 2)
        x = F.pad(x, (0, w % 2, 0, h % 2))
        out_hw = ((h + h % 2) // 2, (w + w % 2) // 2)
        x = self.sampler(x).transpose(1, 2)
        return self.reduction(self.norm(x)), out_hw


class SwinBlockSequence(nn.Module):
    """One stage: blocks alternating regular/shifted windows, then (except the last) patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        for block in self.blocks:
            x = block(x, hw)
        if self.downsample is None:
            return x, hw, x, hw
        down, down_hw = self.downsample(x, hw)
        return down, down_hw, x, hw


class SwinTransformer(nn.Module):
    """mmseg Swin with `norm0`..`norm3` on the four stage outputs, returned as NCHW maps."""

    def __init__(self, size: str = "swin_t", window: int = WINDOW) -> None:
        super().__init__()
        embed, depths, heads = SWIN_SIZES[size]
        self.num_features = [embed * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(3, embed, 4)
        self.stages = nn.ModuleList(
            SwinBlockSequence(self.num_features[i], depths[i], heads[i], window, i < len(depths) - 1)
            for i in range(len(depths))
        )
        for i, channels in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw, out, out_hw = stage(x, hw)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(-1, *out_hw, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
        return outs
