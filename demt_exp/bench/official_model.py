"""The official DeMT / DeGMix models, re-implemented from SPEC 1.2-1.6 in the official parameter layout.

Independent of `demt_exp.models` on purpose: module names, nesting and registration order follow
the official code (mmseg Swin, ATRC base head, DeMT/DeGMix `DemtHead`), so `state_dict()` has the
official keys in the official order, and the forward pass is the official computation:
  * mmseg Swin: pad to a multiple of 4 before the patch conv; window attention pads to a multiple
    of the window, then shifts, masks with -100 and crops back; Unfold-based patch merging;
  * nn.MultiheadAttention called the official way, sequence first, on batch-first tensors. The
    DeMT task-query call only ran on PyTorch <= 1.9, which inferred the key length by reshaping:
    keys (B, T*hw, C) were read as (B*T, hw, C). That reshape is done explicitly here (SPEC 1.5.4);
  * DeGMix AnyAttention without softmax, materialising the attention matrix, output indexed [0];
  * ChlSpl through torchvision's deform_conv2d on absolute 1-based tap coordinates (SPEC 1.5.3).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from demt_exp.bench.official_swin import HEAD_DIM, WINDOW, PatchEmbed, SwinTransformer

# ----------------------------------------------------------------------------- deformable mixer


def cycle_offset_buffer(channels: int, kernel: tuple[int, int] = (1, 3)) -> torch.Tensor:
    """CycleFC's fixed offsets for a (1, k) kernel; saved but never used by ChlSpl."""
    offset = torch.empty(1, channels * 2, 1, 1)
    start = (kernel[0] * kernel[1]) // 2
    for i in range(channels):
        offset[0, 2 * i + 0] = 0
        offset[0, 2 * i + 1] = (i + start) % kernel[1] - (kernel[1] // 2)
    return offset


class Offset(nn.Module):
    """Displacements: grouped 3x3 conv of (p_0 + p_n + p_conv(x)), absolute 1-based coordinates."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p_conv = nn.Conv2d(channels, 18, kernel_size=3, padding=1)
        self.opt = nn.Conv2d(18, 2 * channels, kernel_size=3, padding=1, groups=2)
        nn.init.constant_(self.p_conv.weight, 0)

    @staticmethod
    def base_positions(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """p_0 + p_n: rows of the 9 taps in channels 0-8, columns in 9-17."""
        p0_y, p0_x = torch.meshgrid(torch.arange(1, h + 1), torch.arange(1, w + 1), indexing="ij")
        pn_y, pn_x = torch.meshgrid(torch.arange(-1, 2), torch.arange(-1, 2), indexing="ij")
        p_0 = torch.cat([p0_y.flatten().repeat(9, 1), p0_x.flatten().repeat(9, 1)]).view(1, 18, h, w)
        p_n = torch.cat([pn_y.flatten(), pn_x.flatten()]).view(1, 18, 1, 1)
        return (p_0 + p_n).to(like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.p_conv(x)
        return self.opt(self.base_positions(x.shape[2], x.shape[3], o) + o)


class ChlSpl(nn.Module):
    """Deformable 1x1 conv with one displacement per input channel (torchvision deform_conv2d)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.register_buffer("offset", cycle_offset_buffer(in_channels))
        self.get_offset = Offset(in_channels)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_channels)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, self.get_offset(x), self.weight, self.bias, stride=1, padding=0, dilation=1)


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class DefMixer(nn.Module):
    """`depth` blocks of conv1x1 -> GELU -> BN -> residual(ChlSpl -> GELU -> BN) (latest order)."""

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(dim, dim, kernel_size=1),
                    nn.GELU(),
                    nn.BatchNorm2d(dim),
                    Residual(nn.Sequential(ChlSpl(dim, dim), nn.GELU(), nn.BatchNorm2d(dim))),
                )
                for _ in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# ----------------------------------------------------------------------------- heads


def linear_ln(in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, h, w)


class BaseHead(nn.Module):
    """ATRC base head: input transform, per-task bottleneck and logits, upsampling (SPEC 1.4, 1.5.1)."""

    def __init__(self, task_channels: dict[str, int], in_channels: int, dim: int) -> None:
        super().__init__()
        self.tasks = list(task_channels)
        out_channels = in_channels // 8
        self.bottleneck = nn.ModuleDict(
            {
                t: nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv2d(dim, out_channels, 3, padding=1, bias=False),
                        bn=nn.BatchNorm2d(out_channels),
                        relu=nn.ReLU(),
                    )
                )
                for t in self.tasks
            }
        )
        self.final_logits = nn.ModuleDict({t: nn.Conv2d(out_channels, c, 1) for t, c in task_channels.items()})
        for conv in self.final_logits.values():
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    @staticmethod
    def transform_inputs(features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features], dim=1)

    def predict(self, maps: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {
            t: F.interpolate(
                self.final_logits[t](self.bottleneck[t](m)), size=size, mode="bilinear", align_corners=False
            )
            for t, m in zip(self.tasks, maps)
        }

    def task_interaction(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """`task_fusion` as released: batch-first tensor into a sequence-first MHA, then `smlp`."""
        cat = torch.cat(tokens, dim=1)
        return self.smlp(self.task_fusion(cat, cat, cat)[0])


class DemtHead(BaseHead):
    """DeMT head (SPEC 1.5): linear1, DefMixer depth 1, 4-head MHA fusion and task queries."""

    def __init__(self, task_channels: dict[str, int], in_channels: int, dim: int = HEAD_DIM) -> None:
        super().__init__(task_channels, in_channels, dim)
        t = len(self.tasks)
        self.defor_mixers = nn.ModuleList(DefMixer(dim, 1) for _ in range(t))
        self.linear1 = linear_ln(in_channels, dim)
        self.task_fusion = nn.MultiheadAttention(dim, 4, dropout=0.0)
        self.smlp = linear_ln(dim, dim)
        self.smlp2 = nn.ModuleList(linear_ln(dim, dim) for _ in range(t))
        self.task_querys = nn.ModuleList(nn.MultiheadAttention(dim, 4, dropout=0.0) for _ in range(t))

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        x = self.transform_inputs(features)
        b, _, h, w = x.shape
        x = self.linear1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        tokens = [to_tokens(mixer(x)) for mixer in self.defor_mixers]
        fused = self.task_interaction(tokens)
        # PyTorch <= 1.9 read the (B, T*hw, C) keys as (B*T, hw, C): sequence B*T, batch hw.
        keys = fused.reshape(b * len(self.tasks), h * w, -1)
        maps = []
        for i, z in enumerate(tokens):
            query = self.task_querys[i](z, keys, keys)[0]
            maps.append(to_map(z + self.smlp2[i](query), h, w))
        return self.predict(maps, size)


class AnyAttention(nn.Module):
    """LayerNorm + bias-free q/k/v projections, scaled dot products without softmax, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.scale = (dim / heads) ** -0.5

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_q(self.norm_q(q)), self.to_k(self.norm_k(k)), self.to_v(self.norm_v(v))
        b, nq, c = q.shape
        nk = k.shape[1]
        g = self.heads
        q, k, v = q.view(b, nq, g, c // g), k.view(b, nk, g, c // g), v.view(b, nk, g, c // g)
        attn = torch.einsum("bqgc,bkgc->bqgk", q, k) * self.scale  # (B, Nq, G, Nk), no softmax
        out = torch.einsum("bqgk,bkgc->bqgc", attn, v).reshape(b, nq, c)
        return self.proj(out)


class SpatialGatingUnit(nn.Module):
    """gMLP-style unit whose 'spatial' projection is a kernel-1 Conv1d over 256 channels."""

    def __init__(self, d_ffn: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_ffn // 2)
        self.proj = nn.Conv1d(256, 256, kernel_size=1)
        nn.init.constant_(self.proj.weight, 0)
        nn.init.constant_(self.proj.bias, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g = x.chunk(2, dim=-1)
        g = self.proj(self.ln(g).transpose(1, 2)).transpose(1, 2)
        return r * g


class GatingLayer(nn.Module):
    """ln1_0 -> fc1_0 -> GELU -> sgu_0 -> fc2_0 (one layer)."""

    def __init__(self, dim: int, d_ffn: int) -> None:
        super().__init__()
        self.ln1_0 = nn.LayerNorm(dim)
        self.fc1_0 = nn.Linear(dim, d_ffn)
        self.sgu_0 = SpatialGatingUnit(d_ffn)
        self.fc2_0 = nn.Linear(d_ffn // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2_0(self.sgu_0(F.gelu(self.fc1_0(self.ln1_0(x)))))


class SGate(nn.Module):
    """sGATE: residual gating layer, one instance shared by all tasks."""

    def __init__(self, dim: int = 256, d_ff: int = 512) -> None:
        super().__init__()
        self.gating = nn.ModuleList([Residual(GatingLayer(dim, d_ff))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.gating:
            x = layer(x)
        return x


class DegmixHead(BaseHead):
    """DeGMix head (SPEC 1.6): PatchEmbed, DefMixer depth 2, 2-head fusion, AnyAttention, shared sGATE."""

    def __init__(self, task_channels: dict[str, int], in_channels: int, dim: int = HEAD_DIM) -> None:
        super().__init__(task_channels, in_channels, dim)
        t = len(self.tasks)
        self.defor_mixers = nn.ModuleList(DefMixer(dim, 2) for _ in range(t))
        self.linear1 = linear_ln(in_channels, dim)  # constructed, never used
        self.task_fusion = nn.MultiheadAttention(dim, 2, dropout=0.0)
        self.smlp = linear_ln(dim, dim)
        self.smlp2 = nn.ModuleList(linear_ln(dim, dim) for _ in range(t))
        self.patch_embed = PatchEmbed(in_channels, dim, 4)
        self.task_querys = nn.ModuleList(AnyAttention(dim, 2) for _ in range(t))
        self.gmlps = SGate(dim, 512)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        x, (h, w) = self.patch_embed(self.transform_inputs(features))
        x = to_map(x, h, w)
        tokens = [to_tokens(mixer(x)) for mixer in self.defor_mixers]
        fused = self.task_interaction(tokens)
        maps = []
        for i, z in enumerate(tokens):
            query = self.task_querys[i](z, fused, fused)[0]  # batch element 0, broadcast to every image
            maps.append(to_map(self.gmlps(z + self.smlp2[i](query)), h, w))
        return self.predict(maps, size)


class OfficialModel(nn.Module):
    """backbone (mmseg Swin) + head (DeMT or DeGMix `DemtHead`): image -> {task: (B, C_t, H, W)}."""

    def __init__(
        self, head: str, task_channels: dict[str, int], size: str = "swin_t", dim: int = HEAD_DIM, window: int = WINDOW
    ) -> None:
        super().__init__()
        self.backbone = SwinTransformer(size, window)
        heads = {"demt": DemtHead, "degmix": DegmixHead}
        self.head = heads[head](task_channels, sum(self.backbone.num_features), dim)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(image), (image.shape[2], image.shape[3]))


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values everywhere, including zero-initialised convs, biases and BN statistics.

    Scales stay moderate (weights ~ U(+-1/sqrt(fan_in)), norms' weights around 1, variances
    in [0.5, 1.5]) so that a comparison at 1e-4 is meaningful. Index buffers stay as they are.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)

    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.2, 0.2)
            if isinstance(module, nn.BatchNorm2d):
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 1.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
            continue
        for name, param in module.named_parameters(recurse=False):
            if param.dim() == 1:
                uniform(param, -0.1, 0.1)
            elif name == "relative_position_bias_table":
                uniform(param, -1.0, 1.0)
            else:
                bound = 1.0 / math.sqrt(param[0].numel())
                uniform(param, -bound, bound)
    return model
