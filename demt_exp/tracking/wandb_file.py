"""Read back what a W&B run wrote to its `.wandb` file (offline runs hold everything there).

The file is a LevelDB-log framed stream (wandb 0.31): a 7-byte header (":W&B", 0xBEE1, version),
then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: FULL=1, FIRST=2,
MIDDLE=3, LAST=4); a block's tail shorter than a header is padding. Each reassembled payload is
one `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b":W&B"
HEADER = 7
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    """The record payloads of a `.wandb` file, in write order (a torn last record is left out)."""
    raw = Path(path).read_bytes()
    if raw[:4] != MAGIC:
        raise ValueError(f"{path} is not a W&B run file (expected the header {MAGIC!r}, found {raw[:4]!r})")
    position, pending = HEADER, b""
    while position + HEADER <= len(raw):
        left = BLOCK - position % BLOCK
        if left < HEADER:
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[position : position + HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left
            continue
        data = raw[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if len(data) < length:
            return
        pending = data if kind in (FULL, FIRST) else pending + data
        if kind in (FULL, LAST):
            yield pending
            pending = b""


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class WandbRun:
    """What one `.wandb` file says: run identity, config, history rows, summary and files."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # record kinds in order (run, history, preempting, exit ...)
    exit_code: int | None = None


def read_wandb_run(path: Path) -> WandbRun:
    """Parse a `.wandb` file (needs the wandb package for the protobuf classes)."""
    from wandb.proto import wandb_internal_pb2

    run = WandbRun()
    for data in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        run.kinds.append(kind)
        if kind == "exit":
            run.exit_code = int(record.exit.exit_code)
        elif kind == "run":
            _read_run(run, record.run)
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
    return run


def _read_run(run: WandbRun, record: Any) -> None:
    run.run_id, run.project, run.group = record.run_id, record.project, record.run_group
    run.name, run.job_type, run.tags = record.display_name, record.job_type, list(record.tags)
    run.resumed = bool(record.resumed)
    run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})


def run_files(root: Path) -> list[Path]:
    """Every `.wandb` file under `root` (a run folder holds one per start of the same run), oldest first."""
    return sorted(Path(root).glob("**/run-*.wandb"), key=lambda p: p.parent.name)
