"""`python -m demt_exp.bench counts [overrides] [options]`: FLOPs and bytes saved for backward of one
training step, ours beside the official computation.

Counted, not timed, so the figures do not depend on the machine or its load:
- dense FLOPs (matrix products, convolutions, attention; the sampling ops and their backward by formula,
  demt_exp/utils/flops.py) of the forward and of the train step (forward, loss, backward, recomputation
  included), on the matrix-product path a GPU runs (the config's CPU routes are not applied);
- bytes saved for backward: the distinct storages the forward hands autograd (saved_tensors_hooks), the
  parameters left out (they are held anyway), each counted once, in the component that saved it first.
Per component and in total; ours / official as ratios (the official model: demt_exp/bench/official_model.py,
the released code's computation, real Swin sizes only). `--options` adds the memory/compute trade-off: the
train FLOPs and saved bytes of ours under each recompute / checkpointing setting.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from demt_exp.bench.official import build_official_model
from demt_exp.config.compose import compose_config
from demt_exp.utils.flops import count_flops
from demt_exp.utils.tables import text_table

# The recompute / checkpointing settings a user picks by GPU memory (docs/performance.md).
OPTIONS = {
    "default": [],
    "keep the task query's activations": ["decoder.recompute_query=false"],
    "keep ChlSpl's sampling grid": ["encoder.recompute_offsets=false"],
    "activation checkpointing": ["trainer.activation_checkpointing=true"],
}


def saved_bytes(forward: Callable[[], Any], model: nn.Module) -> tuple[Any, dict[str, int]]:
    """Run `forward()`; returns its result and the bytes of the distinct non-parameter storages autograd saved,
    by the top-level component of `model` that saved each first ("other" outside every component)."""
    held = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers()]}
    seen: set[int] = set()
    by_part: dict[str, int] = {}
    current = ["other"]

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:  # a hook that returned a value would replace the module's input
            current.append(name)

        return hook

    def leave(*_: Any) -> None:  # ... or its output
        current.pop()

    hooks = []
    for name, child in model.named_children():
        hooks.append(child.register_forward_pre_hook(enter(name)))
        hooks.append(child.register_forward_hook(leave))

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in held and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            by_part[current[-1]] = by_part.get(current[-1], 0) + storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = forward()
    finally:
        for hook in hooks:
            hook.remove()
    return result, by_part


def component_flops(by_module: dict[str, dict[Any, int]], model: nn.Module) -> dict[str, int]:
    """FLOPs per top-level component of `model`, and the total. The forward's split is exact; the counter's
    module tracking puts part of a backward in the module after it, so only a train step's total is reported."""
    root = type(model).__name__
    parts = {name: sum(by_module.get(f"{root}.{name}", {}).values()) for name, _ in model.named_children()}
    return {**parts, "total": sum(by_module.get("Global", {}).values())}


def measure(model: nn.Module, image: torch.Tensor) -> dict[str, dict[str, int]]:
    """Forward FLOPs, train-step FLOPs and saved bytes, per component and in total."""
    model.train()
    device = image.device
    forward = count_flops(lambda: model(image), device)

    def step() -> None:
        preds, saved["bytes"] = saved_bytes(lambda: model(image), model)
        sum(p.float().square().mean() for p in preds.values()).backward()

    saved: dict[str, dict[str, int]] = {}
    train = count_flops(step, device)
    model.zero_grad(set_to_none=True)
    stored = saved["bytes"]
    for problem in (forward.unaccounted, train.unaccounted):
        if problem:
            raise RuntimeError(f"ops of a known kind that nothing counted: {problem}")
    return {
        "forward_flops": component_flops(forward.by_module, model),
        "train_flops": {"total": component_flops(train.by_module, model)["total"]},
        "saved_bytes": {**stored, "total": sum(stored.values())},
    }


def build(overrides: list[str], official: bool) -> nn.Module:
    from demt_exp.models.model import build_model

    torch.manual_seed(0)
    cfg = compose_config(overrides)
    return build_official_model(cfg) if official else build_model(cfg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = torch.randn(args.batch, 3, *args.size)
    report: dict[str, Any] = {"overrides": args.overrides, "batch": args.batch, "size": list(args.size)}
    report["ours"] = measure(build(args.overrides, official=False), image)
    if not args.no_official:
        report["official"] = measure(build(args.overrides, official=True), image)
        report["ratio"] = {
            what: report["ours"][what]["total"] / report["official"][what]["total"]
            for what in ("forward_flops", "train_flops", "saved_bytes")
        }
    if args.options:
        base = compose_config(args.overrides)
        chosen = {  # a setting the configured parts do not have (DeGMix has no task query) is left out
            name: extra
            for name, extra in OPTIONS.items()
            if all(OmegaConf.select(base, item.split("=")[0]) is not None for item in extra)
        }
        report["options"] = {  # the default setting is the model measured above
            name: measure(build([*args.overrides, *extra], official=False), image) if extra else report["ours"]
            for name, extra in chosen.items()
        }
    return report


def _g(value: int) -> str:
    return f"{value / 1e9:,.2f}"


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f}"


def print_report(report: dict[str, Any]) -> None:
    print(f"counts of one training step, batch {report['batch']}, {report['size'][0]} x {report['size'][1]}")
    for who in ("ours", "official"):
        if who in report:
            counts = report[who]
            rows = [
                [part, _g(counts["forward_flops"].get(part, 0)), _mib(counts["saved_bytes"].get(part, 0))]
                for part in counts["forward_flops"]
            ]
            table = text_table([["component", "forward GFLOPs", "saved MiB"], *rows], right={1, 2})
            total = _g(counts["train_flops"]["total"])
            print(f"\n{who}:", *table, f"train step (forward, loss, backward): {total} GFLOPs", sep="\n")
    if "ratio" in report:
        ratio = report["ratio"]
        print(
            f"\nours / official: forward FLOPs {ratio['forward_flops']:.2f}x, train-step FLOPs "
            f"{ratio['train_flops']:.2f}x, saved bytes {ratio['saved_bytes']:.2f}x"
        )
    if "options" in report:
        rows = [
            [name, _g(c["train_flops"]["total"]), _mib(c["saved_bytes"]["total"])]
            for name, c in report["options"].items()
        ]
        table = text_table([["setting", "train GFLOPs", "saved MiB"], *rows], right={1, 2})
        print("\nmemory / compute trade-off (ours):", *table, sep="\n")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench counts", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. encoder=degmix decoder=degmix")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[448, 576], metavar=("H", "W"))
    parser.add_argument("--no-official", action="store_true", help="ours only (e.g. a small Swin)")
    parser.add_argument("--options", action="store_true", help="each recompute / checkpointing setting too")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
