"""The image list of a boundary evaluation: which val images the SEISM boundary metric scores.

InvPT, TaskPrompter, MLoRE and TaskDiffusion score PASCAL-Context boundaries on a 2,498-image
subset of val that each user has as a file of ids. Every id must name a val image: a list that
does not fit the data would quietly score other images than the paper did.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["read_image_list"]

EXPECTED = "a text file with one val image id per line"
SHOWN_MISSING = 10


def _ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"boundary image list not found: looked for {path}; expected {EXPECTED}")
    try:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err}); expected {EXPECTED}") from None
    if not ids:
        raise ValueError(f"{path}: no ids; expected {EXPECTED}")
    return ids


def read_image_list(path: str | Path, val_ids: Iterable[str], dataset: str) -> tuple[str, ...]:
    """The distinct ids of `path`, in file order; an error naming the file and the ids not in val."""
    path = Path(path).expanduser()
    ids = list(dict.fromkeys(_ids(path)))
    known = set(val_ids)
    missing = [i for i in ids if i not in known]
    if missing:
        shown = ", ".join(missing[:SHOWN_MISSING]) + (
            f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        )
        raise ValueError(
            f"{path}: {len(missing)} of its {len(ids)} ids are not in the {dataset} val split "
            f"({len(known)} images): {shown}; expected {EXPECTED}"
        )
    return tuple(ids)
