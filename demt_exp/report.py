"""Model report: parameters and multiply-accumulates per component (SPEC 1.9, 1.10); every preset at a glance.

`python -m demt_exp.report model [--input-size H W] [--batch B] [--device meta|cpu] [--json PATH]
[hydra overrides...]`, e.g.
`python -m demt_exp.report model tasks=nyud dataset.num_semseg_classes=40 --input-size 425 560`.

Components are the model's own children (backbone, encoder, decoder, heads). MACs come from
torch's FlopCounterMode (2 FLOPs per MAC, halved here) on one eval-mode forward pass under
no_grad, with the ops the counter misses on this install and device added by formula: which
ones is decided by probing the counter at run time (`demt_exp.utils.flops`), never by the torch
version, and the report lists them. On the default meta device nothing is computed, so any
input size is instant; there `deform_backend=auto` takes the pure-PyTorch path (grid_sample +
counted 1x1 conv), which gives the same totals as torchvision's op.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import HydraException

from demt_exp.results.model_size import format_report, model_report
from demt_exp.results.presets import format_presets, preset_names, presets_report
from demt_exp.utils.errors import one_line_errors

if TYPE_CHECKING:  # torch, timm and the models load inside the functions that build a model: `--help` stays instant
    pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Intermixed parsing, so hydra overrides may come before or after the options."""
    parser = argparse.ArgumentParser(prog="python -m demt_exp.report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "what",
        choices=["model", "presets"],
        help="model: one config in detail; presets: one table of every conf/experiment preset",
    )
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. backbone=swin_b tasks=nyud")
    parser.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"), help="network input size (default: dataset.image_size)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="meta", help="meta (shapes only, instant) or cpu/cuda (real tensors)")
    parser.add_argument("--no-macs", action="store_true", help="parameters only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Print the report (and write JSON); returned for in-process callers such as the tests."""
    args = parse_args(argv)
    if args.what == "presets":  # overrides name the presets to show (default: all)
        report = presets_report(args.overrides or preset_names(), macs=not args.no_macs)
        print(format_presets(report))
    else:
        report = model_report(args.overrides, args.input_size, args.batch, args.device, macs=not args.no_macs)
        print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    with one_line_errors(extra=(HydraException,)):  # an unknown preset or override: one line, exit 2
        main(sys.argv[1:])
