"""Checkpoint files: atomic writes, safe reads, and the folder of a run's checkpoints.

Nothing is lost: a file is written to a temporary name, fsynced and renamed, so a crash, a
signal or kill -9 while saving leaves the previous checkpoint whole (and the stale temporary
file is removed on the next start). Nothing runs on load: files are read with
`utils.torch_files.safe_load` (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from demt_exp.utils.errors import UnreadableFileError
from demt_exp.utils.torch_files import safe_load

STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
REQUIRED_KEYS = ("model", "scheduler", "step")  # and "optimizer" unless saved without it


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        _fsync_folder(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def link_atomic(source: Path, target: Path) -> None:
    """Make `target` name the same file as `source` (hard link, else a copy), atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: copy the bytes instead
        tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    """Persist a rename: without it a power loss can forget the new name."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the half-written `.*.tmp` files a killed save left behind."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Read a training checkpoint, naming the file and the missing entries on failure."""
    payload = safe_load(path, trust, what="checkpoint")
    if not isinstance(payload, dict):
        raise UnreadableFileError(
            f"checkpoint {path} holds a {type(payload).__name__}, expected a training checkpoint dict"
        )
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise KeyError(
            f"checkpoint {path} has no {missing} entries; expected keys {', '.join(REQUIRED_KEYS)}, optimizer, rng"
        )
    return payload


class CheckpointFolder:
    """`<run>/checkpoints/`: `step_<N>.pt` files (the newest `keep_last`), `last.pt` naming the newest
    and, when a metric is chosen, `best.pt`; each file whole or absent. `keep_last=0` (quick tries)
    keeps no step file and no `last.pt`, only `best.pt` when a metric is chosen."""

    def __init__(self, folder: str | Path, keep_last: int = 1) -> None:
        if keep_last < 0:
            raise ValueError(f"trainer.checkpoint.keep_last={keep_last}; expected an integer >= 0 (0: no step files)")
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def step_files(self) -> list[tuple[int, Path]]:
        """The kept step files, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := STEP_FILE.match(p.name))]
        return sorted(found)

    def save(self, payload: dict[str, Any], step: int, best: bool = False) -> Path | None:
        """Write the step file, point `last.pt` (and `best.pt`) at it, prune beyond `keep_last`."""
        if not self.keep_last:
            return save_atomic(payload, self.best) if best else None
        path = save_atomic(payload, self.folder / f"step_{step:08d}.pt")
        link_atomic(path, self.last)
        if best:
            link_atomic(path, self.best)
        for _, old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path
