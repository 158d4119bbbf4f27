"""Parameters and multiply-accumulates per component of one configured model (SPEC 1.9, 1.10).

MACs come from torch's FlopCounterMode on one eval-mode forward under no_grad; the ops the counter misses
on this install and device are probed at run time and added by formula (`demt_exp.utils.flops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from demt_exp.config.compose import compose_config

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
