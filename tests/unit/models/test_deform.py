"""ChlSpl: the two backends agree, `auto` works, and the operator computes SPEC 1.5.3."""

from __future__ import annotations

import pytest
import torch

from demt_exp.models import deform
from demt_exp.models.deform import ChannelDeformConv, resolve_backend, tap_coordinates


def _outputs_and_grads(module: ChannelDeformConv, x: torch.Tensor, backend: str):
    module.backend = backend
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    y = module(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    (y * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return y.detach(), x.grad.clone(), grads


@pytest.mark.skipif(
    not deform.torchvision_deform_available(), reason="torchvision's compiled deform_conv2d does not load"
)
def test_backends_agree_on_outputs_and_every_gradient() -> None:
    torch.manual_seed(0)
    module = ChannelDeformConv(32, 24)
    # Non-zero feature offsets too, so the offset branch and its gradient are exercised.
    torch.nn.init.normal_(module.offsets.feature_conv.weight, std=0.05)
    x = torch.randn(2, 32, 13, 17)
    ref_y, ref_gx, ref_grads = _outputs_and_grads(module, x, "torchvision")
    y, gx, grads = _outputs_and_grads(module, x, "torch")
    scale = lambda t: max(1.0, t.abs().max().item())  # noqa: E731 - relative to the tensor's magnitude
    assert (y - ref_y).abs().max().item() <= 1e-5 * scale(ref_y)
    assert (gx - ref_gx).abs().max().item() <= 1e-5 * scale(ref_gx)
    assert set(grads) == {
        "weight",
        "bias",
        "offsets.feature_conv.weight",
        "offsets.feature_conv.bias",
        "offsets.coord_conv.weight",
        "offsets.coord_conv.bias",
    }
    for name, ref in ref_grads.items():
        assert ref.abs().sum() > 0, name
        assert (grads[name] - ref).abs().max().item() <= 1e-5 * scale(ref), name


def test_auto_picks_a_working_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend("auto", "cpu") == "torch"
    expected_cuda = "torchvision" if deform.torchvision_deform_available() else "torch"
    assert resolve_backend("auto", "cuda") == expected_cuda
    module = ChannelDeformConv(4, 4, backend="auto")
    assert module(torch.randn(1, 4, 5, 6)).shape == (1, 4, 5, 6)
    monkeypatch.setattr(deform, "torchvision_deform_available", lambda: False)
    assert resolve_backend("auto", "cuda") == "torch"
    assert module(torch.randn(1, 4, 5, 6)).shape == (1, 4, 5, 6)


def test_unknown_backend_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="'mmcv2'.*auto.*torchvision.*torch"):
        ChannelDeformConv(4, 4, backend="mmcv2")


def test_tap_coordinates_are_absolute_and_one_based() -> None:
    coords = tap_coordinates(3, 4, torch.device("cpu"), torch.float32)
    assert coords.shape == (1, 18, 3, 4)
    # tap k = 0 is (row -1, col -1); pixel (y=2, x=3) -> row 3 + (-1) = 2, col 4 + (-1) = 3
    assert coords[0, 0, 2, 3] == 2 and coords[0, 9, 2, 3] == 3
    # tap k = 8 is (row +1, col +1): pixel (0, 0) -> (2, 2)
    assert coords[0, 8, 0, 0] == 2 and coords[0, 17, 0, 0] == 2
    # centre tap k = 4 is the pixel itself, 1-based
    assert torch.equal(coords[0, 4], torch.arange(1, 4).view(3, 1).expand(3, 4).float())


def _bilinear_zero_pad(img: list[list[float]], y: float, x: float) -> float:
    """Textbook bilinear interpolation with zeros outside, written independently of the code under test."""
    import math

    h, w = len(img), len(img[0])
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy][xx]
    return total


@pytest.mark.parametrize("backend", ["torch", "torchvision"])
def test_each_channel_is_sampled_at_its_own_displacement(backend: str) -> None:
    if backend == "torchvision" and not deform.torchvision_deform_available():
        pytest.skip("torchvision's compiled deform_conv2d does not load")
    torch.manual_seed(1)
    channels = 4
    module = ChannelDeformConv(channels, 2, backend=backend).double()
    # Constant displacements: zero the coordinate weights, put (dy_c, dx_c) in the bias.
    shifts = torch.tensor([[0.5, -1.25], [1.0, 2.0], [-0.3, 0.7], [3.5, -2.5]], dtype=torch.float64)
    with torch.no_grad():
        module.offsets.coord_conv.weight.zero_()
        module.offsets.coord_conv.bias.copy_(shifts.flatten())
    x = torch.randn(1, channels, 5, 6, dtype=torch.float64)
    y = module(x)
    for o in range(2):
        for row, col in ((0, 0), (2, 3), (4, 5)):
            expected = module.bias[o].item() + sum(
                module.weight[o, c, 0, 0].item()
                * _bilinear_zero_pad(x[0, c].tolist(), row + shifts[c, 0].item(), col + shifts[c, 1].item())
                for c in range(channels)
            )
            assert y[0, o, row, col].item() == pytest.approx(expected, abs=1e-10)


def test_displacements_grow_with_absolute_position_at_init() -> None:
    """SPEC 1.5.3: offsets are a conv of absolute coordinates, so they are not translation invariant."""
    torch.manual_seed(0)
    module = ChannelDeformConv(8, 8)
    offsets = module.offsets(torch.zeros(1, 8, 40, 40))
    # Row-coordinate group feeds channels 0..7 (input channels 0..3); interior values grow linearly with the row.
    interior = offsets[0, :8, 5:35, 20]  # (channel, row)
    slope = interior[:, 1:] - interior[:, :-1]
    assert torch.allclose(slope, slope[:, :1].expand_as(slope), atol=1e-3)
    assert slope.abs().max() > 1e-3
