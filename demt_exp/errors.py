"""Mistakes a user can fix: each command prints the message in one line and exits 2, without a traceback.

A traceback says "the program broke"; these say "this key, value or file is not what was expected".
"""

from __future__ import annotations

EXIT_CODE = 2  # argparse's and Hydra's code for a bad command line


class UserError(Exception):
    """Bad input from the user: a config value, a file, a command-line argument."""


class ConfigError(UserError, ValueError):
    """A config value outside what the suite accepts."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the command line or config names does not exist."""


class UnreadableFileError(UserError, RuntimeError):
    """A file exists but is not in the format the command expects."""
