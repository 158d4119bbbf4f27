"""Official DeMT / DeGMix checkpoints for the conversion tests: the official model configs (Swin-T, the data
set's tasks), scrambled models whose every tensor is random, Lightning-style files, and exact comparisons."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TASK_CHANNELS = {
    "nyud": {"semseg": 40, "depth": 1, "normals": 3, "edge": 1},
    "pascal": {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1},
}


def overrides(head: str, data: str) -> list[str]:
    """Config of the official model: Swin-T, the data set's tasks, DeMT or DeGMix (patch projection)."""
    classes = TASK_CHANNELS[data]["semseg"]
    return [f"tasks={data}", f"dataset.num_semseg_classes={classes}", f"encoder={head}", f"decoder={head}"]


# A DeMT NYUD model with a narrow head (the official names do not depend on the width).
TINY_DEMT = [*overrides("demt", "nyud"), "encoder.dim=32"]


def tiny_demt() -> tuple[list[str], nn.Module]:
    """TINY_DEMT's overrides and its model, scrambled."""
    from demt_exp.config.compose import compose_config
    from demt_exp.models.model import build_model

    return TINY_DEMT, scramble_(build_model(compose_config(TINY_DEMT)), seed=3)


@torch.no_grad()
def scramble_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every tensor random (BN statistics and zero-initialised weights too), so equality means something."""
    gen = torch.Generator().manual_seed(seed)
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
        else:
            tensor.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return model


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def save_lightning(state: dict[str, torch.Tensor], path: Path) -> Path:
    """What a Lightning 1.1 checkpoint looks like to us: the state dict under "state_dict"."""
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.1.8", "state_dict": state}, path)
    return path
