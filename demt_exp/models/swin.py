"""Swin Transformer backbone: timm's parameters, the official (mmseg) forward semantics.

The official DeMT/DeGMix backbone is mmsegmentation's Swin (SPEC 1.2). timm holds the same
parameters, but for sizes that are not multiples of the window it shifts *before* padding
and may shrink windows on small maps. We therefore drive timm's modules with the mmseg
order: pad to a multiple of the window, then cyclic shift, mask computed on the padded
grid with -100, crop back. Each of the four stage outputs gets its own LayerNorm
(`norm0`..`norm3` in the official checkpoints) and is returned as NCHW.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import PatchMerging
from torch import nn

from demt_exp.models.lean_linear import lean_linear
from demt_exp.models.recompute import recompute_in_backward, wants_recompute
from demt_exp.models.state_dict import BackboneState, Entry, subtree
from demt_exp.models.timm_body import create_timm_body
from demt_exp.models.window_attention import attend, lean_attention, window_attention

SWIN_VARIANTS: dict[str, str] = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    # Swin-L exists only as README rows (SPEC 1.2); its parameter count there implies window 12.
    "swin_l": "swin_large_patch4_window12_384",
}


@lru_cache(maxsize=64)
def _shift_mask(
    height: int,
    width: int,
    window: int,
    shift: int,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Attention mask of the shifted windows on a padded (height, width) grid, as mmseg builds it.

    Cached per grid, device and dtype, so no step rebuilds it or copies it to the device.
    """
    if device.type != "cpu" or dtype != torch.float32:
        return _shift_mask(height, width, window, shift).to(device=device, dtype=dtype)
    img_mask = torch.zeros(height, width)
    cuts = ((0, -window), (-window, -shift), (-shift, None))
    region = 0
    for rows in cuts:
        for cols in cuts:
            img_mask[rows[0] : rows[1], cols[0] : cols[1]] = region
            region += 1
    windows = _partition(img_mask[None, :, :, None], window).reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window, window, C); H and W are multiples of window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def _merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


@dataclass(frozen=True)
class WindowLayout:
    """mmseg's token order for window attention on a (height, width) map: pad to multiples of the window, shift
    cyclically, cut into windows. `adjoint` (merge, shift back, crop) undoes it, and is its adjoint: a gradient
    goes back through it (models/lean_linear.py)."""

    window: int
    shift: int
    height: int
    width: int

    @property
    def padded(self) -> tuple[int, int]:
        return -(-self.height // self.window) * self.window, -(-self.width // self.window) * self.window

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B * windows, window * window, C)."""
        padded_h, padded_w = self.padded
        x = F.pad(x, (0, 0, 0, padded_w - self.width, 0, padded_h - self.height))
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        return _partition(x, self.window).reshape(-1, self.window * self.window, x.shape[-1])

    def adjoint(self, windows: torch.Tensor) -> torch.Tensor:
        """(B * windows, window * window, C) -> (B, H, W, C)."""
        padded_h, padded_w = self.padded
        x = windows.reshape(-1, self.window, self.window, windows.shape[-1])
        x = _merge(x, self.window, padded_h, padded_w)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x[:, : self.height, : self.width, :] if self.padded != (self.height, self.width) else x


def shifted_window_attention(block: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """mmseg ShiftWindowMSA of norm1(x) on (B, H, W, C) tokens with a timm block's weights; fast: saving for
    backward neither the normalised windows nor the attention probabilities (models/lean_linear.py,
    models/window_attention.py)."""
    _, height, width, _ = x.shape
    layout = WindowLayout(block.window_size[0], block.shift_size[0], height, width)
    mask = None
    if layout.shift > 0:
        mask = _shift_mask(*layout.padded, layout.window, layout.shift, x.device, x.dtype)
    attn = block.attn
    if fast and lean_attention(attn) and isinstance(block.norm1, nn.LayerNorm):
        windows = attend(attn, lean_linear(x, block.norm1, attn.qkv, layout), mask)
    else:
        windows = window_attention(attn, layout.apply(block.norm1(x)), mask, fast)
    return layout.adjoint(windows)


def mlp_branch(block: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """mlp(norm2(x)); fast: saving for backward only the LayerNorm's and the GELU's inputs (models/lean_linear.py),
    the plain computation where the MLP has a dropout or another shape."""
    mlp = block.mlp
    lean = (
        fast
        and isinstance(block.norm2, nn.LayerNorm)
        and isinstance(mlp.act, nn.GELU)
        and isinstance(mlp.norm, nn.Identity)
        and (isinstance(mlp.drop1, nn.Identity) or (isinstance(mlp.drop1, nn.Dropout) and mlp.drop1.p == 0))
    )
    if not lean:
        return mlp(block.norm2(x))
    return mlp.drop2(lean_linear(lean_linear(x, block.norm2, mlp.fc1), mlp.act, mlp.fc2))


def swin_block_forward(block: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """Pre-norm Swin block (attention + MLP, each with stochastic depth) on (B, H, W, C)."""
    x = x + block.drop_path1(shifted_window_attention(block, x, fast))
    return x + block.drop_path2(mlp_branch(block, x, fast))


def patch_merging(downsample: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """timm's PatchMerging on (B, H, W, C): pad to even sizes, merge 2x2 tokens into 4C channels, LayerNorm,
    reduction; fast: saving only the merged tokens for backward (the LayerNorm recomputed there,
    models/lean_linear.py). Other downsampling modules (stage 1's identity) run as they are."""
    merging = isinstance(downsample, PatchMerging) and isinstance(downsample.norm, nn.LayerNorm)
    if not (fast and merging):
        return downsample(x)
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    _, h, w, _ = x.shape
    merged = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return lean_linear(merged, downsample.norm, downsample.reduction)


def stage_forward(stage: nn.Module, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """Patch merging (identity in stage 1), then the stage's blocks, on (B, H, W, C)."""
    x = patch_merging(stage.downsample, x, fast)
    for block in stage.blocks:
        x = swin_block_forward(block, x, fast)
    return x


class SwinBackbone(nn.Module):
    """Four-stage Swin feature extractor returning [(B, c_i, ceil(H/4/2^i), ...)] for i = 0..3."""

    def __init__(
        self,
        variant: str = "swin_t",
        drop_path_rate: float = 0.1,
        window_size: int = 7,
        activation_checkpointing: bool = False,
        embed_dim: int | None = None,
        depths: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
    ) -> None:
        """`embed_dim`, `depths` and `num_heads` (None: the variant's) give a Swin of another width or depth, e.g.
        the small one the end-to-end tests train; no released checkpoint has such a shape."""
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        shape = {"depths": depths, "num_heads": num_heads}
        shape = {key: tuple(int(v) for v in value) for key, value in shape.items() if value is not None}
        if embed_dim is not None:
            shape["embed_dim"] = int(embed_dim)
        body = create_timm_body(
            SWIN_VARIANTS,
            variant,
            "Swin",
            num_classes=0,
            strict_img_size=False,
            always_partition=True,
            window_size=window_size,
            drop_path_rate=drop_path_rate,
            **{
                key: tuple(value) if key != "embed_dim" else int(value)
                for key, value in shape.items()
                if value is not None
            },
        )
        self.patch_embed = body.patch_embed
        self.stages = body.layers
        self.out_channels: list[int] = [info["num_chs"] for info in body.feature_info]
        self.strides: list[int] = [info["reduction"] for info in body.feature_info]
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels)
        self.patch_size = self.patch_embed.patch_size[0]
        self.fast = True  # False: the plain blocks and merges (which save the LayerNorms' and GELU's outputs
        # and the attention probabilities too)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        height, width = image.shape[-2:]
        pad_h = (self.patch_size - height % self.patch_size) % self.patch_size
        pad_w = (self.patch_size - width % self.patch_size) % self.patch_size
        x = self.patch_embed(F.pad(image, (0, pad_w, 0, pad_h)))
        features = []
        recompute = wants_recompute(self.activation_checkpointing)
        for stage, norm in zip(self.stages, self.norms):
            if recompute:
                x = recompute_in_backward(stage, stage_forward, stage, x, self.fast)
            else:
                x = stage_forward(stage, x, self.fast)
            features.append(norm(x).permute(0, 3, 1, 2))  # NCHW view of the NHWC tokens (channels-last)
        return features


# ----------------------------------------------------------------------------- checkpoints

TIMM_REBUILT_BUFFERS = ("relative_position_index", "attn_mask")
OLD_LAYOUT_KEY = "layers.0.downsample.reduction.weight"  # Microsoft's files merge at the end of a stage


def checkpoint_filter_fn(state: Mapping[str, torch.Tensor], backbone: SwinBackbone) -> BackboneState:
    """timm (or Microsoft Swin) ImageNet state dict, or ours, -> our SwinBackbone keys.

    timm's `layers.i` are our `stages.i` (same modules, same patch-merging channel order). Old-layout
    files merge patches at the end of stage i, timm at the start of stage i + 1, so their indices move
    up by one. The classifier (`head.*`) and its final `norm` are dropped, as are the index and mask
    buffers both rebuild. Our per-stage output norms (`norms.*`, mmseg's norm0..norm3) have no
    ImageNet counterpart and keep their initialisation, as when mmseg starts Swin from ImageNet.
    (mmseg UperNet files are converted in `demt_exp.models.official_layout`, with their own layout.)
    """
    if any(k.startswith(("stages.", "norms.")) for k in state):
        return BackboneState("ours", dict(state))
    old_layout = OLD_LAYOUT_KEY in state
    converted: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    for key, value in state.items():
        if key.startswith(("head.", "norm.")):
            dropped["ImageNet classifier and its final norm"] += 1
            continue
        if key.endswith(TIMM_REBUILT_BUFFERS):
            dropped["relative_position_index / attn_mask buffers (rebuilt)"] += 1
            continue
        if old_layout:
            key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
        converted[re.sub(r"^layers\.", "stages.", key)] = value
    return BackboneState("timm", converted, dropped, keep_init=("norms.",))


# mmseg layout: the official DeMT checkpoints and mmseg UperNet files hold this Swin as mmseg names it


def merge_permutation(channels: int) -> torch.Tensor:
    """perm[t] = mmseg channel feeding our (timm) channel t of a 2x2 patch merge of `channels` inputs.

    mmseg merges with nn.Unfold(2, stride 2): channel c*4 + kh*2 + kw. timm reshapes to
    (..., kw, kh, c): channel (kw*2 + kh)*C + c, i.e. the original Swin's x0, x1, x2, x3 order.
    """
    return torch.arange(4 * channels).view(channels, 2, 2).permute(2, 1, 0).reshape(-1)


def swin_block_entries(official: str, ours: str, keys: list[str], window: int, heads: int) -> list[Entry]:
    """One mmseg Swin block: norm1, attn.w_msa (table, index, qkv, proj), norm2, ffn."""
    attn = official + "attn.w_msa."
    return [
        *subtree(official + "norm1.", ours + "norm1.", keys),
        Entry(attn + "relative_position_bias_table", ours + "attn.relative_position_bias_table"),
        Entry(attn + "relative_position_index", synthetic="relative_position_index", shape=(window**2, window**2)),
        *subtree(attn + "qkv.", ours + "attn.qkv.", keys),
        *subtree(attn + "proj.", ours + "attn.proj.", keys),
        *subtree(official + "norm2.", ours + "norm2.", keys),
        *subtree(official + "ffn.layers.0.0.", ours + "mlp.fc1.", keys),
        *subtree(official + "ffn.layers.1.", ours + "mlp.fc2.", keys),
    ]


def patch_merging_entries(official: str, ours: str) -> list[Entry]:
    """mmseg `stages.i.downsample` is timm's `stages.(i+1).downsample`, with the Unfold channel order."""
    return [
        Entry(official + "norm.weight", ours + "norm.weight", "merge_vector"),
        Entry(official + "norm.bias", ours + "norm.bias", "merge_vector"),
        Entry(official + "reduction.weight", ours + "reduction.weight", "merge_columns"),
    ]


def mmseg_entries(backbone: nn.Module, official: str = "backbone.", ours: str = "backbone.") -> list[Entry]:
    """mmseg's layout of our Swin backbone (the official DeMT checkpoints, mmseg UperNet files), in its order."""
    if not isinstance(backbone, SwinBackbone):
        raise ValueError(f"official checkpoints hold a Swin backbone; this model has {type(backbone).__name__}")
    keys = [ours + k for k in backbone.state_dict()]
    entries = [
        *subtree(official + "patch_embed.projection.", ours + "patch_embed.proj.", keys),
        *subtree(official + "patch_embed.norm.", ours + "patch_embed.norm.", keys),
    ]
    last = len(backbone.stages) - 1
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            window, heads = block.attn.window_size[0], block.attn.num_heads
            prefix = f"stages.{i}.blocks.{j}."
            entries += swin_block_entries(official + prefix, ours + prefix, keys, window, heads)
        if i < last:
            entries += patch_merging_entries(official + f"stages.{i}.downsample.", ours + f"stages.{i + 1}.downsample.")
    for i in range(len(backbone.norms)):
        entries += subtree(official + f"norm{i}.", ours + f"norms.{i}.", keys)
    return entries
