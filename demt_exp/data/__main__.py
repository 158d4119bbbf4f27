"""`python -m demt_exp.data verify|prepare ...`: get a data set folder ready and check it before training.

  python -m demt_exp.data verify dataset=nyud dataset.root=/data/NYUDv2
  python -m demt_exp.data prepare NYUDv2.tar.gz --dest /data [--sha256 HEX] [--force]

Exit code 0 when the folder is clean / unpacked, 1 when problems were found, 2 for a usage or
configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from demt_exp.config.compose import compose_config
from demt_exp.data.prepare import PrepareError, prepare_archive
from demt_exp.data.verify import format_report, verify_config

USAGE = (
    "usage: python -m demt_exp.data verify [overrides ...]\n"
    "  e.g. python -m demt_exp.data verify dataset=nyud dataset.root=/data/NYUDv2\n"
    "       python -m demt_exp.data prepare ARCHIVE --dest FOLDER [--sha256 HEX] [--force]"
)
COMMANDS = ("verify", "prepare")


def prepare_main(args: Sequence[str]) -> int:
    """Unpack one published archive, checking its SHA-256 when given."""
    parser = argparse.ArgumentParser(prog="python -m demt_exp.data prepare")
    parser.add_argument("archive", help="NYUDv2.tar.gz or PASCALContext.tar.gz")
    parser.add_argument("--dest", required=True, help="folder to unpack into (the DEMT_DATA folder)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    parser.add_argument("--force", action="store_true", help="replace an existing data set folder")
    options = parser.parse_args(list(args))
    try:
        target = prepare_archive(options.archive, options.dest, options.sha256, options.force)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"unpacked {options.archive} to {target}; check it with: "
        f"python -m demt_exp.data verify dataset=... dataset.root={target}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, overrides = args[0], args[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; expected one of {list(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    if command == "prepare":
        return prepare_main(overrides)
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
