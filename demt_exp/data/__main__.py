"""`python -m demt_exp.data verify [hydra overrides]`: check a data set folder before training.

Example: `python -m demt_exp.data verify dataset=nyud dataset.root=/data/NYUDv2`. Exit code 0 when
the folder is clean, 1 when problems were found, 2 for a usage or configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from demt_exp.data.verify import format_report, verify_config

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
USAGE = ("usage: python -m demt_exp.data verify [overrides ...]\n"
         "  e.g. python -m demt_exp.data verify dataset=nyud dataset.root=/data/NYUDv2")
COMMANDS = ("verify",)


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The config `python -m demt_exp <overrides>` would run with."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, overrides = args[0], args[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; expected one of {list(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        cfg = compose_config(overrides)
        report = verify_config(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
