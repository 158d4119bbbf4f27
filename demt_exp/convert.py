"""`python -m demt_exp.convert --official CKPT --out OURS.pt [overrides]`: import official weights.

The Hydra overrides describe the model the checkpoint belongs to (e.g. `tasks=nyud
encoder=degmix decoder=degmix dataset.num_semseg_classes=40`); the model is built from
`conf/`, the checkpoint converted and strict-loaded into it (which verifies every key and
shape), and our state dict is written atomically: a file that `model.init=OURS.pt` then loads
without conversion. Backbone-only files (mmseg UperNet, ImageNet HRNet, timm) fill only the
backbone, so only the backbone (`backbone.*` keys) is written for them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from demt_exp.checkpoint import save_atomic
from demt_exp.config import compose_config
from demt_exp.models.init import load_weights
from demt_exp.models.model import build_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demt_exp.convert",
        description="Convert an official DeMT/DeGMix checkpoint (or a backbone file: mmseg, timm, HRNet) to our state dict.",
    )
    parser.add_argument("--official", required=True, type=Path, help="checkpoint to convert (any known format)")
    parser.add_argument("--out", required=True, type=Path, help="where to write our state dict")
    parser.add_argument("--trust", action="store_true",
                        help="allow a full unpickle of a file that needs one (it can run code inside the file)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides describing the model, e.g. tasks=nyud")
    return parser.parse_args(argv)


def convert(official: Path, out: Path, overrides: list[str], trust: bool = False) -> str:
    """Build, load (strict), write; returns the one-line summary."""
    model = build_model(compose_config(overrides))
    report = load_weights(model, official, trust=trust)
    state: dict[str, torch.Tensor] = model.state_dict()
    if report.scope == "backbone":
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    save_atomic(state, out)
    return f"{report.summary()}; wrote {len(state)} tensors to {out}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(convert(args.official, args.out, args.overrides, args.trust))
    return 0


if __name__ == "__main__":
    sys.exit(main())
