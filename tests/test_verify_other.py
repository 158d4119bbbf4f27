"""`python -m demt_exp.data verify` on PASCAL-Context and Cityscapes: clean folders pass, broken files are named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fake_cityscapes import write_fake_cityscapes
from fake_pascal import write_fake_pascal
from paths import REPO_ROOT

REPO = REPO_ROOT


def verify(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "demt_exp.data", "verify", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pascal_context_clean_then_corrupt(tmp_path: Path) -> None:
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=2, n_val=2)
    clean = verify(tmp_path, "dataset=pascal_context", f"dataset.root={root}")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "PASCAL-Context at" in clean.stdout and "train: 2 entries, 2 clean" in clean.stdout
    broken = root / "sal_distill" / "2008_000003.png"
    broken.write_bytes(b"not a png")
    result = verify(tmp_path, "dataset=pascal_context", f"dataset.root={root}")
    assert result.returncode == 1
    assert str(broken) in result.stdout and "val: 2 entries, 1 clean, 1 with problems" in result.stdout


def test_cityscapes_missing_disparity_is_named(tmp_path: Path) -> None:
    root = write_fake_cityscapes(tmp_path / "cityscapes")
    assert verify(tmp_path, "dataset=cityscapes", f"dataset.root={root}").returncode == 0
    disparity = sorted((root / "disparity" / "val").rglob("*.png"))[0]
    disparity.unlink()
    result = verify(tmp_path, "dataset=cityscapes", f"dataset.root={root}")
    assert result.returncode == 1 and str(disparity) in result.stdout


def test_synthetic_has_nothing_to_verify(tmp_path: Path) -> None:
    result = verify(tmp_path, "dataset=synthetic")
    assert result.returncode == 2 and "dataset=synthetic has no files" in result.stderr
