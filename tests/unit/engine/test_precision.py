"""trainer.precision: the autocast each choice gives; bf16 autocast stays faithful (ChlSpl positions in fp32,
training follows fp32 on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
from demt_exp.engine.precision import autocast_factory
from demt_exp.engine.rng import seed_everything
from demt_exp.engine.step import train_step
from demt_exp.losses.task_losses import build_loss
from demt_exp.models import deform
from demt_exp.models.deform import ChannelDeformConv
from demt_exp.models.model import build_model


def test_autocast_choices() -> None:
    cpu = torch.device("cpu")
    with autocast_factory("bf16", cpu)():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with autocast_factory("fp32", cpu)():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_factory("fp16", cpu)
    with pytest.raises(ValueError, match="trainer.precision='fp8'"):
        autocast_factory("fp8", cpu)


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


@pytest.mark.skipif(
    not deform.torchvision_deform_available(), reason="torchvision's compiled deform_conv2d does not load"
)
def test_torchvision_backend_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    module = ChannelDeformConv(4, 4, backend="torchvision")
    x = torch.randn(1, 4, 9, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), module(x), atol=0.1)


# 50 steps that clearly train on CPU in seconds: 32x32 synthetic scenes, two tasks, batch 2, the
# Swin-T backbone frozen (it runs forward under autocast; the DeMT encoder and decoder, where the
# ChlSpl sampling lives, train). The real Swin-T on purpose: behind the frozen small Swin of the end-to-end
# tests (commands.SMALL_SWIN) the loss of steps 41-50 stays at 0.9 times that of steps 1-10 (Swin-T: 0.54),
# too little training to tell bf16 from fp32 by.
TRAINS_IN_50 = [
    "dataset.image_size=[32,32]",
    "dataset.train.num_samples=64",
    "encoder.dim=32",
    "tasks.names=[semseg,depth]",
    "trainer.batch_size=2",
    "model.freeze_backbone=true",
]


def train_losses(cfg, precision: str, steps: int = 50) -> tuple[list[float], torch.nn.Module]:
    """The training loop's own step (train_step) on the same shuffled batches for each precision."""
    seed_everything(0)
    model = build_model(cfg).train()
    loss_fn = build_loss(cfg.tasks)
    optimizer = build_optimizer(cfg.optimizer, model, float(cfg.trainer.head_lr_mult))
    scheduler = build_poly_scheduler(optimizer, steps)
    loader = DataLoader(
        instantiate(cfg.dataset.train),
        batch_size=int(cfg.trainer.batch_size),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    autocast = autocast_factory(precision, torch.device("cpu"))
    losses: list[float] = []
    while len(losses) < steps:
        for batch in loader:
            losses.append(float(train_step(model, batch, loss_fn, optimizer, scheduler, autocast, None).loss))
            if len(losses) == steps:
                break
    return losses, model


@pytest.mark.slow
def test_50_bf16_steps_follow_fp32_and_every_chlspl_offset_is_computed_in_fp32(compose) -> None:
    """The mean loss of steps 41-50 under bf16 autocast is within 1% of fp32's; fp32's is below
    0.7 times that of steps 1-10 (it really trains). Then in one bf16 forward of the trained
    model, every ChlSpl's offsets are fp32 and equal to the same module's fp32 offsets of its input."""
    cfg = compose(TRAINS_IN_50)
    fp32, _ = train_losses(cfg, "fp32")
    bf16, model = train_losses(cfg, "bf16")
    assert np.mean(fp32[-10:]) < 0.7 * np.mean(fp32[:10])
    assert abs(np.mean(bf16[-10:]) - np.mean(fp32[-10:])) <= 0.01 * np.mean(fp32[-10:])
    seen: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
        for m in model.modules()
        if isinstance(m, deform.ChannelOffsets)
    ]
    batch = next(iter(DataLoader(instantiate(cfg.dataset.val), batch_size=2)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch["image"])
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(cfg.tasks.names)  # one deformable mixer per task
    for module, features, offsets in seen:
        assert features.dtype == torch.bfloat16 and offsets.dtype == torch.float32
        assert module.feature_conv.weight.abs().max() > 0  # the learned term is not zero after training
        with torch.no_grad():
            assert torch.equal(offsets, module(features.float()))
