"""Reading files written by torch.save without running code from them.

`torch.load(weights_only=True)` rebuilds tensors and plain Python values only; a file that needs a
full unpickle (which can run any code inside the file) is refused by name unless the caller passes
`trust=True`. Checkpoints, weights files and official checkpoints all come through here.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from demt_exp.utils.errors import MissingFileError, UnreadableFileError, UserError

log = logging.getLogger("demt_exp")

TRUST_HINT = "trust_checkpoints=true"
EXPECTED = "expected a file written by torch.save: a training checkpoint or a weights file"


class UntrustedCheckpointError(UserError, pickle.UnpicklingError):
    """A file holds pickled Python objects beyond tensors and plain values."""


def safe_load(path: str | Path, trust: bool = False, what: str = "checkpoint") -> Any:
    """`torch.load` that never runs code from the file unless `trust` is given."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist; {EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()
        detail = next((line for line in reason if "global" in line.lower()), "")
        if not detail:  # not a refused Python object: the bytes themselves are not a torch file
            first = next((line for line in reason if "error" in line.lower()), reason[0] if reason else str(error))
            raise UnreadableFileError(f"{what} {path} cannot be read ({first.strip()[:200]}); {EXPECTED}") from error
        if not trust:
            raise UntrustedCheckpointError(
                f"{what} {path} holds pickled Python objects that only a full unpickle can rebuild, and a full "
                f"unpickle can run any code inside the file ({detail.strip()[:200]}). Load it only if you trust "
                f"where it came from, with {TRUST_HINT}"
            ) from None
    except Exception as error:
        raise UnreadableFileError(f"{what} {path} cannot be read ({error}); {EXPECTED}") from error
    log.warning("fully unpickling %s %s because %s was given", what, path, TRUST_HINT)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise UnreadableFileError(f"{what} {path} cannot be read ({error}); {EXPECTED}") from error
