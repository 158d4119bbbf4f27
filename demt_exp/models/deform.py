"""ChlSpl: the deformable 1x1 convolution with one learned displacement per input channel.

SPEC 1.5.3. Offsets are a grouped 3x3 convolution of *absolute* 1-based tap coordinates
(plus a 3x3 convolution of the features), as the official code computes them. The sampled
value of input channel c at pixel (y, x) is X_c(y + dy_c, x + dx_c), bilinear, zero outside
the map; the output is a 1x1 convolution of the sampled channels.

Two numerically equivalent backends: torchvision's compiled `deform_conv2d` and a pure
PyTorch one (per-channel `grid_sample`) that runs wherever PyTorch runs. `auto` takes
torchvision's op on CUDA when it loads, and the pure PyTorch one on CPU, where it is faster.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import lru_cache
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.lean_linear import autocast_dtype
from demt_exp.models.recompute import recompute_in_backward, wants_recompute

Backend = Literal["auto", "torchvision", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "torchvision", "torch")


def autocast_off(device: torch.device) -> Any:
    """Autocast switched off on this device; a no-op where autocast does not exist (the meta
    device, on which the report and the config checks build models)."""
    if device.type == "meta":
        return nullcontext()
    return torch.autocast(device.type, enabled=False)


@lru_cache(maxsize=1)
def torchvision_deform_available() -> bool:
    """True when torchvision's compiled deform_conv2d runs here (it fails with mismatched wheels)."""
    try:
        from torchvision.ops import deform_conv2d

        x = torch.ones(1, 1, 2, 2)
        deform_conv2d(x, torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 1, 1))
    except Exception:  # any import or dispatcher failure means "not usable"
        return False
    return True


def resolve_backend(backend: str, device_type: str = "cuda") -> str:
    """Turn `auto` into a backend that works here and is the faster one for the device.

    On CPU the pure PyTorch backend is about 3x faster than torchvision's kernel for a
    training step (`python -m demt_exp.bench deform`); on CUDA torchvision's kernel is used
    when its compiled ops load.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown deformable backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "torchvision" if device_type == "cuda" and torchvision_deform_available() else "torch"
    return backend


def normalised_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """grid_sample's coordinate of each pixel centre along an axis of `size` pixels
    (align_corners=False): (2p + 1) / size - 1, exactly 0 when size is 1."""
    return (2 * torch.arange(size, device=like.device, dtype=like.dtype) + 1) / size - 1


def sampling_grid(offsets: torch.Tensor) -> torch.Tensor:
    """grid_sample's (B * C, h, w, 2) grid that displaces every channel of a (B, C, h, w) map by its own offsets
    (B, 2C, h, w), (dy, dx) of channel c at 2c and 2c + 1; in the offsets' dtype."""
    b, c2, h, w = offsets.shape
    # unbind, not offsets[:, 0::2]: a strided slice backpropagates a zero-filled (B, 2C, h, w) per use
    dy, dx = offsets.view(b, c2 // 2, 2, h, w).unbind(2)
    # align_corners=False maps position p + o to (2(p + o) + 1) / size - 1 = centre(p) + o * 2 / size:
    # one pass per coordinate instead of five
    grid_x = torch.add(normalised_centres(w, offsets), dx, alpha=2 / w)
    grid_y = torch.add(normalised_centres(h, offsets).view(h, 1), dy, alpha=2 / h)
    return torch.stack((grid_x, grid_y), dim=-1).view(b * c2 // 2, h, w, 2)


def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of every channel of x (B, C, h, w) at its own grid, zeros outside (pure PyTorch), in the
    grid's dtype (fp32 positions and weights for a half-precision x), returned in x's dtype."""
    b, c, h, w = x.shape
    flat = x.to(grid.dtype).reshape(b * c, 1, h, w)
    sampled = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(b, c, h, w).to(x.dtype)


class _SampleThenConv(torch.autograd.Function):
    """conv1x1(sample(x, grid)), saving x and the grid only: grid_sample keeps both (x in the grid's dtype) for
    its own backward, so the sampled map the convolution would keep as well is recomputed in backward instead
    (interpolation, no matrix product). Backward in aten ops (no graph break under torch.compile); the sampling
    runs in the grid's dtype, the convolution in the dtype autocast gave the forward's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.compute = autocast_dtype(x.device.type)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, grid, weight)
        with autocast_off(x.device):
            sampled = sample(x, grid)
        return F.conv2d(sampled, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, grid, weight = ctx.saved_tensors
        need_x, need_grid, need_weight, need_bias = ctx.needs_input_grad
        compute = ctx.compute or x.dtype
        b, c, h, w = x.shape
        grad_sampled, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad.to(compute),
            sample(x, grid).to(compute),
            weight.to(compute),
            [weight.shape[0]] if ctx.has_bias else None,
            [1, 1],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            1,
            [need_x or need_grid, need_weight, need_bias and ctx.has_bias],
        )
        grad_x = grad_grid = None
        if need_x or need_grid:
            grad_x, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_sampled.to(grid.dtype).reshape(b * c, 1, h, w),
                x.to(grid.dtype).reshape(b * c, 1, h, w),
                grid,
                0,  # bilinear
                0,  # zeros outside
                False,  # align_corners
                [need_x, need_grid],
            )
            grad_x = grad_x.view(b, c, h, w).to(x.dtype) if need_x else None
        grad_weight = grad_weight.to(weight.dtype) if need_weight else None
        grad_bias = grad_bias.to(weight.dtype) if need_bias and ctx.has_bias else None
        return grad_x, grad_grid if need_grid else None, grad_weight, grad_bias


def deform_conv1x1(
    x: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    backend: str,
    lean: bool = True,
) -> torch.Tensor:
    """1x1 deformable convolution with one offset group per input channel; lean (pure PyTorch backend, training):
    the sampled map is recomputed in backward rather than saved (`_SampleThenConv`)."""
    if resolve_backend(backend, x.device.type) == "torchvision":
        from torchvision.ops import deform_conv2d

        if not low_precision(x):
            return deform_conv2d(x, offsets, weight, bias)
        # no bf16 kernel (and fp16 positions are too coarse): run the op in fp32, return x's dtype
        with autocast_off(x.device):
            out = deform_conv2d(x.float(), offsets.float(), weight.float(), None if bias is None else bias.float())
        return out.to(x.dtype)
    if low_precision(x):  # positions and bilinear weights in fp32, the convolution in x's dtype (or autocast's)
        with autocast_off(x.device):
            grid = sampling_grid(offsets.float())
        weight, bias = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
    else:
        grid = sampling_grid(offsets)
    if lean and torch.is_grad_enabled():
        return _SampleThenConv.apply(x, grid, weight, bias)
    with autocast_off(x.device):
        sampled = sample(x, grid)
    return F.conv2d(sampled, weight, bias)


def low_precision(x: torch.Tensor) -> bool:
    """True under autocast or for half-precision tensors: the cases that need fp32 positions."""
    if x.dtype in (torch.bfloat16, torch.float16):
        return True
    return x.device.type != "meta" and torch.is_autocast_enabled(x.device.type)


def full_precision(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision dtypes, the dtype itself otherwise (float64 stays float64)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def tap_coordinates(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 18, h, w) absolute 1-based positions of the 9 taps of a 3x3 kernel: rows then columns."""
    taps = torch.arange(9, device=device)
    tap_rows = (taps // 3 - 1).to(dtype).view(9, 1, 1)
    tap_cols = (taps % 3 - 1).to(dtype).view(9, 1, 1)
    rows = torch.arange(1, height + 1, device=device, dtype=dtype).view(1, height, 1)
    cols = torch.arange(1, width + 1, device=device, dtype=dtype).view(1, 1, width)
    row_coords = (rows + tap_rows).expand(9, height, width)
    col_coords = (cols + tap_cols).expand(9, height, width)
    return torch.cat((row_coords, col_coords)).unsqueeze(0)


class ChannelOffsets(nn.Module):
    """Per-channel displacements: grouped 3x3 conv of (tap coordinates + 3x3 conv of the features).

    The feature conv starts at zero weight (official `p_conv`); the official code's hook meant
    to scale its gradient by 0.1 has no effect, so none is applied (SPEC 8 item 7).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.feature_conv = nn.Conv2d(channels, 18, kernel_size=3, padding=1)
        self.coord_conv = nn.Conv2d(18, 2 * channels, kernel_size=3, padding=1, groups=2)
        nn.init.zeros_(self.feature_conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2C, h, w) displacements, always in fp32: in bf16 absolute coordinates >= 128 lose the
        learned term and positions are off by about a pixel, so autocast is switched off here."""
        return self.from_coordinates(self.coordinates(x))

    def coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 18, h, w) tap coordinates moved by the feature conv, in fp32 (float64 for a float64 x)."""
        dtype = full_precision(x.dtype)
        with autocast_off(x.device):
            coords = tap_coordinates(x.shape[-2], x.shape[-1], x.device, dtype)
            feature = self.feature_conv
            return coords + F.conv2d(x.to(dtype), feature.weight.to(dtype), feature.bias.to(dtype), padding=1)

    def from_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, 2C, h, w) displacements: the grouped 3x3 conv of the moved coordinates, in their dtype."""
        coord = self.coord_conv
        with autocast_off(coords.device):
            weight, bias = coord.weight.to(coords.dtype), coord.bias.to(coords.dtype)
            return F.conv2d(coords, weight, bias, padding=1, groups=coord.groups)


class ChannelDeformConv(nn.Module):
    """ChlSpl: deformable 1x1 conv, one (dy, dx) pair per input channel (SPEC 1.5.3).

    Saved for backward in training (fast): `recompute_offsets` keeps only x and the moved tap coordinates
    (18 channels) and rebuilds the offsets (2C channels), the sampling grid and the sampled map in backward:
    the grouped 3x3 conv of the coordinates and the interpolation run again (with torchvision's op, the op
    too), the 1x1 convolution does not (checkpoint's early stop ends the recomputation at its input). Without
    it, x and the sampling grid are kept and only the sampled map is recomputed (`_SampleThenConv`, pure
    PyTorch backend), for no convolution run twice."""

    def __init__(
        self, in_channels: int, out_channels: int, backend: str = "auto", recompute_offsets: bool = True
    ) -> None:
        super().__init__()
        resolve_backend(backend)  # fail at build time on a typo
        self.backend = backend
        self.recompute_offsets = recompute_offsets
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.offsets = ChannelOffsets(in_channels)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_channels)
        nn.init.uniform_(self.bias, -bound, bound)
        self.fast = True  # False: the plain ChlSpl, which saves the sampling grid and the sampled map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if wants_recompute(self.fast and self.recompute_offsets):
            return recompute_in_backward(self, self.sample_from, x, self.offsets.coordinates(x))
        return deform_conv1x1(x, self.offsets(x), self.weight, self.bias, self.backend, self.fast)

    def sample_from(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Offsets from the moved tap coordinates, then the plain deformable 1x1 convolution: recomputed in
        backward, the convolution's input is the last thing it rebuilds."""
        offsets = self.offsets.from_coordinates(coords)
        return deform_conv1x1(x, offsets, self.weight, self.bias, self.backend, lean=False)
