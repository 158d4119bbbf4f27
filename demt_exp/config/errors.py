"""After Hydra rejects a command line, name the keys that do exist, or the extra a chosen plugin needs.

Hydra lists the valid options of a config group, but for a mistyped key it only says the
key is not in the struct, and for a plugin that is not installed it names a config it cannot find.
This runs only on that failure path, so normal runs pay nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from demt_exp.config.compose import compose_config


def unknown_key_hints(overrides: Sequence[str]) -> list[str]:
    """One line per dotted override whose key does not exist, listing the keys of its parent."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra has already reported the syntax error
        return []
    dotted = [o for o in parsed if "." in o.key_or_group and not o.is_add() and not o.is_delete()]
    dotted = [o for o in dotted if not o.key_or_group.startswith("hydra.")]
    if not dotted:
        return []
    others = [o.input_line for o in parsed if o not in dotted and o.input_line is not None]
    try:
        cfg = compose_config(others)
    except Exception:  # the group selection itself is wrong; Hydra's message already says how
        return []
    hints = []
    for override in dotted:
        parent, _, leaf = override.key_or_group.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf not in node:
            hints.append(f"unknown key {override.key_or_group!r}; valid keys of {parent!r}: {', '.join(sorted(node))}")
        elif node is None:
            hints.append(f"unknown key {override.key_or_group!r}: {parent!r} does not exist in the config")
    return hints


# Config options that need an optional extra: (override, the plugin module it loads, the extra).
EXTRAS = (
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "search"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher=local", "hydra_plugins.hydra_submitit_launcher", "slurm"),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def missing_extra_hints(overrides: Sequence[str]) -> list[str]:
    """One line per chosen option whose plugin is not installed, naming the extra that brings it."""
    return [
        f"{option} needs the {extra!r} extra: pip install 'demt_exp[{extra}]'"
        for option, module, extra in EXTRAS
        if option in overrides and not _installed(module)
    ]


def report_unknown_keys() -> None:
    """Print the hints for the current command line to stderr."""
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    for line in missing_extra_hints(overrides) + unknown_key_hints(overrides):
        print(line, file=sys.stderr)
