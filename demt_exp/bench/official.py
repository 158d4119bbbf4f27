"""The official code's computation as a bench baseline: `official_model.py` built for a config.

That module re-implements the released DeMT / DeGMix models op for op (mmseg Swin with its
non-fused window attention, `nn.MultiheadAttention` over every task's tokens, ChlSpl through
torchvision's deform_conv2d) and is held against our models at 1e-4 by the converter's tests.
Timing it beside the default measures our speed-up over the official computation on the same
machine in one run, instead of carrying over a ratio measured elsewhere.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from torch import nn

from demt_exp.bench import official_model
from demt_exp.tasks import output_channels

HEADS = {"TaskAwareDecoder": "demt", "GatedTaskDecoder": "degmix"}
RELEASED_PROJECTION = {"demt": "linear", "degmix": "patch"}


def official_head(cfg: Any) -> str:
    """'demt' or 'degmix' for a config the released code has, else a SystemExit naming the key."""
    decoder = str(cfg.decoder._target_).rsplit(".", 1)[-1]
    if decoder not in HEADS:
        raise SystemExit(
            f"--baseline official: decoder {cfg.decoder._target_} has no official counterpart; "
            f"expected one of {sorted(HEADS)}"
        )
    head = HEADS[decoder]
    checks = {
        "backbone._target_": (str(cfg.backbone._target_).endswith("SwinBackbone"), "a Swin backbone"),
        "decoder.attention": (cfg.decoder.attention == "official", "official"),
        "encoder.neck": (OmegaConf.select(cfg, "encoder.neck") == "concat", "concat"),
        "encoder.projection": (
            OmegaConf.select(cfg, "encoder.projection") == RELEASED_PROJECTION[head],
            f"{RELEASED_PROJECTION[head]} (the released {head} head)",
        ),
        "encoder.depth": (int(cfg.encoder.depth) == (1 if head == "demt" else 2), "the released depth"),
    }
    for key, (ok, expected) in checks.items():
        if not ok:
            raise SystemExit(
                f"--baseline official: {key}={OmegaConf.select(cfg, key)} is not in the released "
                f"code; expected {expected}"
            )
    return head


def build_official_model(cfg: Any) -> nn.Module:
    """The official model for `cfg`'s tasks, Swin size, window and width, randomly initialised."""
    head = official_head(cfg)
    channels = output_channels(list(cfg.tasks.names), int(cfg.dataset.num_semseg_classes))
    model = official_model.OfficialModel(
        head, dict(channels), str(cfg.backbone.variant), int(cfg.encoder.dim), int(cfg.backbone.window_size)
    )
    return official_model.randomize_(model)
