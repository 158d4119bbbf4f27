"""Benchmarks that print figures: `python -m demt_exp.bench [model]|scaling|startup|deform|step|data|... [options]`.

model (default): eval forward and train step time, memory and component shares of the
        configured model, optionally beside the plain formulation (`demt_exp/bench/model.py`).

deform: forward+backward time of the ChlSpl backends at a head-sized input, and their ratio.
linear: F.linear (BLAS) vs the oneDNN 1x1-convolution route of fp32 CPU linear layers, forward
        and forward+backward, at the layer shapes of DeMT Swin-T at batch 2, 448x576.
step:   training-step throughput (images/s) of a composed config, e.g. the default job.
data:   samples/s of one data-loading worker through a data set's train and val pipelines.
boundary: images/s of the SEISM boundary evaluation (odsF) on generated edge maps.
Figures are medians over repeats in one process, so ratios are comparable on a noisy machine.
"""

from __future__ import annotations

import importlib
import sys

from demt_exp.bench.help import SUBCOMMANDS

OWN_MODULE = {"model": "model", "scaling": "scaling", "startup": "startup"}  # the rest live in bench/components.py


def overview() -> str:
    """`python -m demt_exp.bench --help`: every subcommand with its line."""
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:{width}s}  {text}" for name, text in SUBCOMMANDS.items()]
    return (
        "usage: python -m demt_exp.bench [SUBCOMMAND] [options]   (SUBCOMMAND --help for its options)\n\n"
        + __doc__.split("\n\n")[0]
        + "\n\nsubcommands:\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--help"], ["-h"]):
        print(overview())
        return
    if not argv or argv[0].startswith("--") or "=" in argv[0]:  # `model` is the default subcommand
        argv = ["model", *argv]
    module = OWN_MODULE.get(argv[0], "components")
    bench = importlib.import_module(f"demt_exp.bench.{module}")
    bench.main(argv[1:] if module != "components" else argv)


if __name__ == "__main__":
    main()
