"""Unpack the published data archives (NYUDv2.tar.gz, PASCALContext.tar.gz) into the expected layout.

The archive is checked against a SHA-256 sum when one is given, extracted into a temporary
folder next to the destination (tar's `data` filter refuses absolute paths, links out of the
tree and device files), and its top folder is renamed into place only when complete, so an
interrupted run never leaves a half-unpacked data set where the loaders look.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path

# Top folder each published archive unpacks to (SPEC 3.1).
EXPECTED_TOP: dict[str, str] = {"NYUDv2.tar.gz": "NYUDv2", "PASCALContext.tar.gz": "PASCALContext"}


class PrepareError(RuntimeError):
    """The archive is not what was expected; the message names it and says why."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (archives are several GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(archive: Path, expected: str | None) -> None:
    """Fail with both sums when the archive's SHA-256 differs from `expected`."""
    if expected is None:
        return
    actual = sha256_of(archive)
    if actual.lower() != expected.strip().lower():
        raise PrepareError(f"{archive}: SHA-256 is {actual}, expected {expected.strip().lower()}")


def top_folder(names: list[str], archive: Path) -> str:
    """The single top-level folder of the archive's members."""
    tops = {Path(n).parts[0] for n in names if n and Path(n).parts}
    if len(tops) != 1:
        raise PrepareError(f"{archive}: expected one top-level folder, found {sorted(tops)[:5]}")
    return tops.pop()


def prepare_archive(archive: str | Path, dest: str | Path, sha256: str | None = None, force: bool = False) -> Path:
    """Unpack `archive` under `dest` and return the data set folder (e.g. dest/NYUDv2)."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise PrepareError(f"archive {archive} does not exist")
    check_sha256(archive, sha256)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        handle = tarfile.open(archive)
    except tarfile.TarError as error:
        raise PrepareError(f"{archive}: not a readable tar archive ({error})") from error
    with handle:
        top = top_folder(handle.getnames(), archive)
        expected = EXPECTED_TOP.get(archive.name)
        if expected is not None and top != expected:
            raise PrepareError(f"{archive}: unpacks to {top!r}, expected {expected!r}")
        target = dest / top
        if target.exists() and not force:
            raise PrepareError(f"{target} already exists; remove it or pass --force to replace it")
        staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=dest))
        try:
            handle.extractall(staging, filter="data")
            if target.exists():
                shutil.rmtree(target)
            (staging / top).rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
