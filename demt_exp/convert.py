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

from hydra.errors import HydraException

from demt_exp.utils.errors import UserError, one_line_errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demt_exp.convert",
        description="Convert an official DeMT/DeGMix checkpoint (or a backbone file: mmseg, timm, HRNet) "
        "to our state dict.",
    )
    parser.add_argument("--official", required=True, type=Path, help="checkpoint to convert (any known format)")
    parser.add_argument("--out", required=True, type=Path, help="where to write our state dict")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow a full unpickle of a file that needs one (it can run code inside the file)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides describing the model, e.g. tasks=nyud")
    return parser.parse_args(argv)


def convert(official: Path, out: Path, overrides: list[str], trust: bool = False) -> str:
    """Build, load (strict), write; returns the one-line summary.

    The model comes from the command line alone: the file gives tensors (read `weights_only` unless
    `trust`), never a config, so nothing in it chooses code.
    """
    from demt_exp.config.compose import compose_config
    from demt_exp.engine.checkpoint import save_atomic
    from demt_exp.models.load_weights import load_state
    from demt_exp.models.model import build_model
    from demt_exp.models.state_dict import read_state_dict
    from demt_exp.utils.torch_files import TRUST_HINT, UntrustedCheckpointError

    try:
        state = read_state_dict(official, trust)
    except UntrustedCheckpointError as error:  # this command's switch is --trust
        raise UserError(str(error).replace(TRUST_HINT, "--trust")) from None
    model = build_model(compose_config(overrides))
    report = load_state(model, state, str(official))
    ours = model.state_dict()
    if report.scope == "backbone":
        ours = {k: v for k, v in ours.items() if k.startswith("backbone.")}
    save_atomic(ours, out)
    return f"{report.summary()}; wrote {len(ours)} tensors to {out}"


def main(argv: list[str] | None = None) -> int:
    """The command: a user's mistake (a file, an override, a model the file does not fit) is one `error:` line
    on stderr and exit code 2, without a traceback."""
    args = parse_args(argv)
    with one_line_errors(extra=(ValueError, HydraException)):
        print(convert(args.official, args.out, args.overrides, args.trust))
    return 0


if __name__ == "__main__":
    sys.exit(main())
