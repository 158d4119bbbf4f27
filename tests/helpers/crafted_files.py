"""Torch files whose pickle runs code when fully unpickled: a marker file appears if and only if it ran."""

from __future__ import annotations

from pathlib import Path

import torch


class MarkerOnUnpickle:
    """Unpickling this runs `open(marker, 'w')`: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (str(self.marker), "w"))


def crafted_file(tmp_path: Path, wrap_as_checkpoint: bool = True) -> tuple[Path, Path]:
    """A torch file whose pickle creates a marker file when fully unpickled."""
    marker = tmp_path / "pwned"
    payload: object = (
        {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "step": 1, "evil": MarkerOnUnpickle(marker)}
        if wrap_as_checkpoint
        else {"w": MarkerOnUnpickle(marker)}
    )
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    assert not marker.exists()
    return path, marker


def write_code_pickle(path: Path, marker: Path) -> Path:
    """A real torch file whose full unpickle runs code (creates `marker`); `weights_only` refuses it."""
    torch.save({"state": MarkerOnUnpickle(marker)}, path)
    return path
