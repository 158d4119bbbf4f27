"""`python -m demt_exp.data verify` on PASCAL-Context and Cityscapes: clean folders pass, broken files are named.

The command's `main` runs in this process (the module's `__main__` block is only `sys.exit(main())`; that a
real `python -m demt_exp.data` process exits with its code is checked once, in test_nyud.py's
test_verify_cli_exit_code), saving a Python + torch start-up per call."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_cityscapes import write_fake_cityscapes

from demt_exp.data.__main__ import main as data_main
from demt_exp.data.example_pascal import write_fake_pascal

Verify = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def verify(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Verify:
    """verify(*overrides): what `python -m demt_exp.data verify <overrides>` exits with and prints."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def run(*overrides: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # only this call's output
        code = data_main(["verify", *overrides])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["verify", *overrides], code, out, err)

    return run


def test_pascal_context_clean_then_corrupt(tmp_path: Path, verify: Verify) -> None:
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=2, n_val=2)
    clean = verify("dataset=pascal_context", f"dataset.root={root}")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "PASCAL-Context at" in clean.stdout and "train: 2 entries, 2 clean" in clean.stdout
    broken = root / "sal_distill" / "2008_000003.png"
    broken.write_bytes(b"not a png")
    result = verify("dataset=pascal_context", f"dataset.root={root}")
    assert result.returncode == 1
    assert str(broken) in result.stdout and "val: 2 entries, 1 clean, 1 with problems" in result.stdout


def test_cityscapes_missing_disparity_is_named(tmp_path: Path, verify: Verify) -> None:
    root = write_fake_cityscapes(tmp_path / "cityscapes")
    assert verify("dataset=cityscapes", f"dataset.root={root}").returncode == 0
    disparity = sorted((root / "disparity" / "val").rglob("*.png"))[0]
    disparity.unlink()
    result = verify("dataset=cityscapes", f"dataset.root={root}")
    assert result.returncode == 1 and str(disparity) in result.stdout


def test_synthetic_has_nothing_to_verify(verify: Verify) -> None:
    result = verify("dataset=synthetic")
    assert result.returncode == 2 and "dataset=synthetic has no files" in result.stderr
