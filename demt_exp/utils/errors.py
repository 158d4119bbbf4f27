"""Mistakes a user can fix: each command prints the message in one line and exits 2, without a traceback.

A traceback says "the program broke"; these say "this key, value or file is not what was expected".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_CODE = 2  # argparse's and Hydra's code for a bad command line
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class UserError(Exception):
    """Bad input from the user: a config value, a file, a command-line argument."""


class ConfigError(UserError, ValueError):
    """A config value outside what the suite accepts."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the command line or config names does not exist."""


class UnreadableFileError(UserError, RuntimeError):
    """A file exists but is not in the format the command expects."""


# A file named on the command line or in a config that is not there (a data root, an image) is the user's to fix.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


@contextmanager
def one_line_errors(
    extra: tuple[type[BaseException], ...] = (), after: Callable[[int], str] | None = None
) -> Iterator[None]:
    """A command's body: a user's mistake (USER_ERRORS and `extra`) prints `error: <message>` in one line and
    exits 2; Ctrl-C prints one line and exits 130. `after(code)` tidies up and returns text to append."""
    try:
        yield
    except (*USER_ERRORS, *extra) as error:
        message, code = f"error: {' '.join(str(error).split())}", EXIT_CODE
    except KeyboardInterrupt:
        message, code = "aborted by Ctrl-C", INTERRUPTED_EXIT
    else:
        return
    print(message + (after(code) if after else ""), file=sys.stderr)
    sys.exit(code)
