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
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import HydraException

from demt_exp.config.compose import CONF_DIR, compose_config
from demt_exp.models.init_setting import describe_init
from demt_exp.utils.errors import ConfigError, one_line_errors

if TYPE_CHECKING:  # torch, timm and the models load inside the functions that build a model: `--help` stays instant
    import torch

COUNTED_NOTE = (
    "counted by FlopCounterMode itself: convolutions, linear layers (mm/addmm), einsum (lowered to bmm) and, "
    "where its kernel is covered, scaled-dot-product attention; every other op kind the models use is probed "
    "on this device and added by formula where the counter gives 0 (listed above)"
)
NOT_COUNTED_NOTE = (
    "not counted: norms (LayerNorm, BatchNorm), activations (GELU, ReLU), softmax, resizing (interpolate), "
    "padding, elementwise ops (residual adds, scaling, gates, offset coordinates)"
)
BUFFERS_NOTE = "buffers excluded: BN running statistics, relative-position indices, masks"


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per child module, total and trainable; `other` only if some sit outside the children."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(p.numel() for p in model.parameters())
    if total != sum(counts.values()):
        counts["other"] = total - sum(counts.values())
    counts["total"] = total
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def printed_op(op: Any) -> str:
    """`aten::grid_sampler_2d`, as torch's profiler spells an op."""
    from demt_exp.utils.flops import op_name

    return op_name(op).replace(".", "::", 1)


def count_macs(model: torch.nn.Module, image: torch.Tensor) -> dict[str, Any]:
    """MACs per child module, split into counted by torch and added by formula, plus per-op totals."""
    import torch

    from demt_exp.models.formulation import set_fast
    from demt_exp.utils.flops import OP_KINDS, count_flops, counter_gaps

    formula_text = {kind.name: kind.formula_text for kind in OP_KINDS}
    model.eval()
    fast_paths = set_fast(model, False)  # count the model's definition (SPEC 1.10), not the shortcuts
    try:
        with torch.no_grad():
            count = count_flops(lambda: model(image), image.device)
    finally:
        set_fast(model, True)
    fast_total = None
    if fast_paths:
        with torch.no_grad():
            fast_total = sum(count_flops(lambda: model(image), image.device).by_module.get("Global", {}).values()) // 2
    flops, added_ops = count.by_module, count.added_ops
    root = type(model).__name__

    def split(ops: dict[Any, int]) -> dict[str, int]:
        added = sum(v for op, v in ops.items() if op in added_ops) // 2
        counted = sum(v for op, v in ops.items() if op not in added_ops) // 2
        return {"counted": counted, "added": added, "total": counted + added}

    components = {name: split(flops.get(f"{root}.{name}", {})) for name, _ in model.named_children()}
    total = split(flops.get("Global", {}))
    outside = {k: total[k] - sum(c[k] for c in components.values()) for k in total}
    if any(outside.values()):
        components["other"] = outside
    ops = flops.get("Global", {})
    gaps = counter_gaps(image.device.type)
    return {
        "components": components,
        "total": total,
        "counted_by_op": {str(op): v // 2 for op, v in ops.items() if op not in added_ops},
        "added_by_op": {printed_op(op): ops.get(op, 0) // 2 for op in added_ops},
        "added_formulas": {printed_op(op): f"{kind}: MACs = {formula_text[kind]}" for op, kind in added_ops.items()},
        "unaccounted_ops": count.unaccounted,
        "probe_failures": {
            **gaps.unavailable,
            **{k: f"counted {c} MACs, formula {e}" for k, (c, e) in gaps.mismatched.items()},
        },
        "torch": torch.__version__,
        "formulation": "plain (the model's definition); the default fast formulation computes the same function",
        "fast_total": fast_total,
    }


def model_report(
    overrides: Sequence[str],
    input_size: Sequence[int] | None = None,
    batch: int = 1,
    device: str = "meta",
    macs: bool = True,
) -> dict[str, Any]:
    """Everything the command prints, as a JSON-ready dict. Input size defaults to dataset.image_size."""
    import torch

    from demt_exp.models.model import build_model

    cfg = compose_config(overrides)
    size = [int(s) for s in (input_size or cfg.dataset.image_size)]
    with torch.device(device):  # meta: no memory, no init time, even for Swin-L
        model = build_model(cfg)
    report: dict[str, Any] = {
        "overrides": list(overrides),
        "input": [batch, 3, *size],
        "device": device,
        "parameters": count_parameters(model),
        "parameter_note": BUFFERS_NOTE,
    }
    if macs:
        report["macs"] = count_macs(model, torch.randn(batch, 3, *size, device=device))
        report["mac_unit"] = "multiply-accumulates; 1 MAC = 2 FLOPs in torch's FlopCounterMode"
        report["notes"] = [COUNTED_NOTE, NOT_COUNTED_NOTE]
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table: exact integers with thousands separators (MACs also in G)."""
    lines = [
        f"model report: {' '.join(report['overrides']) or '(default config)'}",
        f"parameters ({report['parameter_note']}):",
    ]
    lines += [f"  {name:<10} {value:>15,}" for name, value in report["parameters"].items()]
    if "macs" not in report:
        return "\n".join(lines)
    macs = report["macs"]
    lines.append(f"MACs at input {'x'.join(map(str, report['input']))} on {report['device']} ({report['mac_unit']}):")
    lines.append(f"  {'component':<10} {'counted':>19} {'added':>17} {'total':>19} {'':>9}")
    for name, row in [*macs["components"].items(), ("total", macs["total"])]:
        lines.append(
            f"  {name:<10} {row['counted']:>19,} {row['added']:>17,} {row['total']:>19,} {row['total'] / 1e9:>7.2f} G"
        )
    lines.append("  counted by op: " + ", ".join(f"{op} {v:,}" for op, v in macs["counted_by_op"].items()))
    lines.append(
        f"added by formula (probed: FlopCounterMode of torch {macs['torch']} counts these as 0 on {report['device']}):"
    )
    for op, value in macs["added_by_op"].items():
        used = "" if value else " (not run by this model/backend)"
        lines.append(f"  {op}: {value:,} MACs{used}; {macs['added_formulas'][op]}")
    for op in macs["unaccounted_ops"]:
        lines.append(f"  warning: {op} ran and neither the counter nor a formula counted it")
    for kind, why in macs["probe_failures"].items():
        lines.append(f"  note: {kind} could not be probed on {report['device']} ({why})")
    if macs.get("fast_total") is not None:
        lines.append(
            f"MACs above are the plain formulation's; the fast formulation that runs by default computes the "
            f"same function in {macs['fast_total']:,} MACs ({macs['fast_total'] / 1e9:.2f} G)"
        )
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """Every experiment preset shipped in conf/experiment."""
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def published_text(paper: Any) -> str:
    """The README row's published numbers in one cell: params, FLOPs, metrics, and the SPEC note."""
    if not paper or not paper.get("row"):
        return (paper or {}).get("note") or "no published row"
    parts = [f"{label} {paper[key]}" for key, label in (("params", "params"), ("flops", "FLOPs")) if paper.get(key)]
    parts += [f"{name} {value}" for name, value in (paper.get("metrics") or {}).items()]
    text = ", ".join(parts)
    return f"{text} ({paper['note']})" if paper.get("note") else text


def preset_row(name: str, macs: bool) -> dict[str, Any]:
    """One preset on the meta device: counts, MACs at its input size, init file, README row."""
    import torch

    from demt_exp.models.model import build_model

    cfg = compose_config([f"experiment={name}"])
    size = [int(s) for s in cfg.dataset.image_size]
    with torch.device("meta"):
        model = build_model(cfg)
    counts = count_parameters(model)
    init = describe_init(cfg)
    row: dict[str, Any] = {
        "preset": name,
        "input": size,
        "parameters": counts["total"],
        "trainable": counts["trainable"],
        "init": init,
        "init_present": Path(init).is_file(),
        "readme_row": (cfg.paper or {}).get("row"),
        "published": published_text(cfg.paper),
    }
    if macs:
        row["macs"] = count_macs(model, torch.randn(1, 3, *size, device="meta"))["total"]["total"]
    return row


def presets_report(names: Sequence[str], macs: bool = True) -> dict[str, Any]:
    """The `presets` table as JSON-ready rows."""
    unknown = sorted(set(names) - set(preset_names()))
    if unknown:
        raise ConfigError(f"unknown presets {unknown}; conf/experiment has {preset_names()}")
    return {
        "presets": [preset_row(name, macs) for name in names],
        "mac_unit": "multiply-accumulates (G)",
        "init_dir_note": "init: the model.init file; init_present is false when it is missing on this machine",
    }


PRESETS_WIDTH = 120  # a terminal: every line of the presets table fits


def _fit(text: str, indent: str = "", more: str = "") -> list[str]:
    """`text` wrapped to the table width; long names (file names) are broken rather than overflowing."""
    return textwrap.wrap(
        text, PRESETS_WIDTH, initial_indent=indent, subsequent_indent=more or indent, break_on_hyphens=False
    )


def init_labels(presets: Sequence[dict[str, Any]]) -> dict[str, str]:
    """`[1]`, `[2]`... per distinct init file, in table order: many presets share a backbone file, and a
    file name (~100 characters) would not fit a row."""
    files = dict.fromkeys(r["init"] for r in presets if r["init"] != "random")
    return {path: f"[{i}]" for i, path in enumerate(files, start=1)}


def init_cell(row: dict[str, Any], labels: dict[str, str]) -> str:
    if row["init"] == "random":
        return "random"
    return f"{labels[row['init']]} {'present' if row['init_present'] else 'MISSING'}"


def init_legend(presets: Sequence[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """The init files by folder, each marked present or MISSING (not on this machine)."""
    present = {r["init"]: r["init_present"] for r in presets}
    folders = dict.fromkeys(str(Path(path).parent) for path in labels)
    lines = []
    for folder in folders:
        where = folder if Path(folder).is_absolute() else f"{folder} (here: {Path(folder).resolve()})"
        lines += _fit(
            f"init files (model.init) in {where}; MISSING: not on this machine (put the file there, "
            "point DEMT_WEIGHTS at its folder, or give model.init=<file>):"
        )
        for path, label in labels.items():
            if str(Path(path).parent) == folder:
                status = "present" if present[path] else "MISSING"
                lines += _fit(f"{label} {status}  {Path(path).name}", "  ", " " * (len(label) + 12))
    return lines


def format_presets(report: dict[str, Any]) -> str:
    """A 120-column table: a row per preset with its init file's label and status, the README row it
    reproduces with its published numbers on the lines below, then the init files by label."""
    labels = init_labels(report["presets"])
    header = ("preset", "input", "params", "trainable", "GMACs", "init")
    cells = [header] + [
        (
            r["preset"],
            "x".join(map(str, r["input"])),
            f"{r['parameters']:,}",
            f"{r['trainable']:,}",
            f"{r['macs'] / 1e9:.2f}" if "macs" in r else "-",
            init_cell(r, labels),
        )
        for r in report["presets"]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    for r, row in zip(report["presets"], cells[1:]):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        published = f"{r['readme_row']}: {r['published']}" if r["readme_row"] else r["published"]
        lines += _fit(published, "    ", "      ")
    lines += init_legend(report["presets"], labels)
    lines += _fit(
        "params/trainable: exact counts (buffers excluded); GMACs: one image at the preset's input size, "
        "deformable and grid-sampling ops added by formula; below each preset: the README row it "
        "reproduces and its published numbers"
    )
    return "\n".join(lines)


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
