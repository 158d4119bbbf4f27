"""One table of every `conf/experiment` preset: parameters, GMACs, init files and the published row it reproduces."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demt_exp.config.compose import CONF_DIR, compose_config
from demt_exp.models.init_setting import describe_init
from demt_exp.results.model_size import count_macs, count_parameters
from demt_exp.utils.errors import ConfigError
from demt_exp.utils.tables import text_table


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
    table = text_table(cells)
    lines = table[:2]
    for r, row in zip(report["presets"], table[2:]):
        lines.append(row)
        published = f"{r['readme_row']}: {r['published']}" if r["readme_row"] else r["published"]
        lines += _fit(published, "    ", "      ")
    lines += init_legend(report["presets"], labels)
    lines += _fit(
        "params/trainable: exact counts (buffers excluded); GMACs: one image at the preset's input size, "
        "deformable and grid-sampling ops added by formula; below each preset: the README row it "
        "reproduces and its published numbers"
    )
    return "\n".join(lines)
