"""After Hydra rejects an override of an unknown key, name the keys that do exist there.

Hydra lists the valid options of a config group, but for a mistyped key it only says the
key is not in the struct. This runs only on that failure path, so normal runs pay nothing.
"""

from __future__ import annotations

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


def report_unknown_keys() -> None:
    """Print the hints for the current command line to stderr."""
    for line in unknown_key_hints([a for a in sys.argv[1:] if not a.startswith("-")]):
        print(line, file=sys.stderr)
