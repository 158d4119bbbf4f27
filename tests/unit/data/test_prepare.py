"""`prepare`: unpack a published-style archive, check its SHA-256, never leave half a data set behind."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from paths import REPO_ROOT

from demt_exp.data.__main__ import main as data_main
from demt_exp.data.example_nyud import write_fake_nyud
from demt_exp.data.prepare import PrepareError, prepare_archive

REPO = REPO_ROOT


def make_archive(tmp_path: Path) -> Path:
    """NYUDv2.tar.gz holding a tiny data set in the DeMT layout under the top folder NYUDv2/."""
    source = tmp_path / "source"
    root = write_fake_nyud(source / "NYUDv2", layout="demt", n_train=2, n_val=1)
    archive = tmp_path / "NYUDv2.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="NYUDv2")
    return archive


def test_prepare_unpacks_checks_the_sum_and_verify_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive = make_archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "demt_exp.data", "prepare", str(archive), "--dest", str(dest), "--sha256", digest],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "NYUDv2" / "gt_sets" / "train.txt").is_file()
    assert [p.name for p in dest.iterdir()] == ["NYUDv2"]  # no staging folder left
    capsys.readouterr()
    # `verify` in this process (its CLI process is test_nyud.py's test_verify_cli_exit_code): one start-up less.
    code = data_main(["verify", "dataset=nyud", f"dataset.root={dest / 'NYUDv2'}"])
    out, err = capsys.readouterr()
    assert code == 0, out + err


def test_wrong_sum_fails_naming_both_sums_and_writes_nothing(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    dest = tmp_path / "data"
    with pytest.raises(PrepareError, match=f"{archive.name}: SHA-256 is [0-9a-f]{{64}}, expected 0{{64}}"):
        prepare_archive(archive, dest, sha256="0" * 64)
    assert not dest.exists() or not any(dest.iterdir())


def test_existing_folder_is_kept_unless_forced(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    dest = tmp_path / "data"
    (dest / "NYUDv2").mkdir(parents=True)
    (dest / "NYUDv2" / "mine.txt").write_text("keep")
    with pytest.raises(PrepareError, match="already exists"):
        prepare_archive(archive, dest)
    assert (dest / "NYUDv2" / "mine.txt").is_file()
    prepare_archive(archive, dest, force=True)
    assert not (dest / "NYUDv2" / "mine.txt").exists() and (dest / "NYUDv2" / "gt_sets").is_dir()


def test_unsafe_or_unexpected_archives_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "NYUDv2.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("NYUDv2/../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(Exception):
        prepare_archive(evil, tmp_path / "data")
    assert not (tmp_path / "escape.txt").exists()
    wrong = tmp_path / "other" / "NYUDv2.tar.gz"
    wrong.parent.mkdir()
    with tarfile.open(wrong, "w:gz") as tar:
        info = tarfile.TarInfo("Something/readme.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PrepareError, match="unpacks to 'Something', expected 'NYUDv2'"):
        prepare_archive(wrong, tmp_path / "data2")
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_archive(tmp_path / "missing.tar.gz", tmp_path / "data3")
