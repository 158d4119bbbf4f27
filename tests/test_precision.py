"""bf16 autocast stays faithful: ChlSpl positions in fp32, training follows fp32 (CPU)."""

from __future__ import annotations

import pytest
import torch

from demt_exp.models import deform
from demt_exp.models.deform import ChannelDeformConv


def test_offsets_under_bf16_autocast_equal_fp32() -> None:
    torch.manual_seed(0)
    module = ChannelDeformConv(8, 8)
    torch.nn.init.normal_(module.offsets.feature_conv.weight, std=0.05)
    x = torch.randn(1, 8, 150, 160)  # coordinates >= 128, where bf16 spacing is 1 pixel
    expected = module.offsets(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        offsets = module.offsets(x)
        out = module(x)
    assert offsets.dtype == torch.float32
    assert torch.equal(offsets, expected)
    # the regime where bf16 would lose the learned term: positions >= 128 have a bf16 spacing of 1
    positions = deform.tap_coordinates(150, 160, x.device, torch.float32) + module.offsets.feature_conv(x)
    assert positions.max() >= 128
    assert (positions.bfloat16().float() - positions).abs().max() >= 0.2
    reference = module(x)
    assert (out.float() - reference).abs().max() <= 0.05 * reference.abs().max()


@pytest.mark.skipif(not deform.torchvision_deform_available(), reason="torchvision's compiled deform_conv2d does not load")
def test_torchvision_backend_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    module = ChannelDeformConv(4, 4, backend="torchvision")
    x = torch.randn(1, 4, 9, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), module(x), atol=0.1)
