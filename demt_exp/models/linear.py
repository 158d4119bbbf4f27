"""fp32 linear layers on CPU through oneDNN's 1x1 convolution: the same matrix product, faster.

PyTorch's CPU `F.linear` calls MKL's sgemm, which on AMD CPUs runs its AVX2 code path; oneDNN's
convolution uses AVX-512 there. A (M, C_in) row-major matrix is, as it is in memory, a
channels-last (1, C_in, M, 1) image, so a 1x1 convolution with the weight as (C_out, C_in, 1, 1)
computes x W^T + b without a copy in either direction, and its backward gives the same
gradients. On a 2-core AMD EPYC with AVX-512 the forward runs 2.1-3.5x faster and forward plus
backward 1.5-2.0x at the layer shapes of Swin-T and the decoder (`python -m demt_exp.bench linear`).
Only fp32 CPU tensors outside autocast take this route; everything else (CUDA, float64,
autocast) calls `F.linear`.

The route is off unless switched on (`use_onednn_linears`, which the training engine calls for
`trainer.cpu_linear=onednn` on a CPU): the model built is the model defined, and on a CPU without
AVX-512 the route is slower for training (0.75-1.06x of `F.linear` forward+backward, measured on
an AVX2-only machine). Check yours with `python -m demt_exp.bench linear` before turning it on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_BUILT = torch.backends.mkldnn.is_available()  # read once: torch.compile cannot trace the call
ROUTE = {"onednn": False}  # switched by `use_onednn_linears` (the process runs one training configuration)


def takes_convolution_route(x: torch.Tensor) -> bool:
    """True, once the route is switched on, for fp32 CPU inputs outside autocast (oneDNN serves convolutions)."""
    return (
        ROUTE["onednn"]
        and ONEDNN_BUILT
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 2
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.enabled
    )


def convolution_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1
) -> torch.Tensor:
    """x W^T + b (per group of columns with `groups`) as a 1x1 convolution of the rows of x viewed
    as a channels-last image."""
    rows = x.reshape(-1, x.shape[-1])
    image = rows.view(1, rows.shape[0], 1, rows.shape[1]).permute(0, 3, 1, 2)  # (1, C_in, M, 1), channels-last
    out = F.conv2d(image, weight[:, :, None, None], bias, groups=groups)  # channels-last (1, C_out, M, 1)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN where `takes_convolution_route`."""
    if takes_convolution_route(x):
        return convolution_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """(M, G*C_in) -> (M, G*C_out): group g's columns times its own (C_out, C_in) block of
    `weight` (G*C_out, C_in), plus `bias` (G*C_out); a grouped 1x1 convolution on the oneDNN route,
    a batched matrix product elsewhere."""
    if takes_convolution_route(x):
        return convolution_linear(x, weight, bias, groups)
    m = x.shape[0]
    blocks = weight.view(groups, -1, weight.shape[1])  # (G, C_out, C_in)
    out = torch.bmm(x.reshape(m, groups, -1).transpose(0, 1), blocks.transpose(1, 2))  # (G, M, C_out)
    if bias is not None:
        out = out + bias.view(groups, 1, -1)
    return out.transpose(0, 1).reshape(m, weight.shape[0])


class CpuLinear(nn.Linear):
    """nn.Linear whose fp32 CPU forward runs through oneDNN; `fast = False` calls `F.linear`."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias) if self.fast else F.linear(x, self.weight, self.bias)


def use_onednn_linears(model: nn.Module | None = None, enabled: bool = True) -> int:
    """Switch the oneDNN route of this module's functions on (or off), and with a model make its plain
    nn.Linear layers CpuLinear (`use_cpu_linears`); returns how many layers were swapped."""
    ROUTE["onednn"] = enabled
    return use_cpu_linears(model) if model is not None and enabled else 0


def use_cpu_linears(model: nn.Module) -> int:
    """Make every plain nn.Linear of `model` a CpuLinear in place (same parameters, same state_dict keys);
    returns how many. Subclasses such as MultiheadAttention's `out_proj` are left alone."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CpuLinear
            swapped += 1
    return swapped
