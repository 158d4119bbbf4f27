"""A normal (non-editable) install ships conf/ and sweeps/ and composes them from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from commands import REPO_ROOT

SHIPPED = ["conf", "sweeps", "demt_exp", "hydra_plugins", "pyproject.toml", "setup.py", "README.md"]


def test_optional_extras_are_declared() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"wandb", "slurm", "dev"} <= set(extras)
    assert any(req.startswith("wandb==0.31") for req in extras["wandb"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the tree (so no build/ folder lands in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(
            REPO_ROOT / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO_ROOT / name).is_dir() else {}),
        )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return next(out.glob("demt_exp-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_config_sweep_and_the_search_plugin(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"demt_exp/{p.relative_to(REPO_ROOT)}"
        for folder in ("conf", "sweeps")
        for p in (REPO_ROOT / folder).rglob("*.yaml")
    }
    expected |= {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "hydra_plugins").rglob("*.py")}
    assert expected and expected <= names, sorted(expected - names)
    assert "hydra_plugins/__init__.py" not in names  # Hydra's namespace, shared with the other plugins


@pytest.mark.slow
def test_installed_package_composes_shipped_and_user_configs_from_any_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python, script = venv / "bin" / "python", venv / "bin" / "demt-exp"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    mine = tmp_path / "my_conf" / "backbone"
    mine.mkdir(parents=True)
    (mine / "my_swin.yaml").write_text("defaults:\n  - swin_t\n  - _self_\ndrop_path_rate: 0.123\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"

    def run(*args: str) -> str:
        result = subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    where = run(str(python), "-c", "import demt_exp.config.compose as c; print(c.CONF_DIR); print(c.SWEEPS_DIR)")
    assert all(str(venv) in line for line in where.split()), where  # the wheel's copy, not the checkout
    assert "steps:" in run(str(python), "-m", "demt_exp", "--cfg", "job", "experiment=demt_nyud_swin_t")
    assert "trainer.seed: 0,1,2,3,4" in run(str(script), "--cfg", "hydra", "+sweep=seeds")
    assert "drop_path_rate: 0.123" in run(str(script), "--cfg", "job", searchpath, "backbone=my_swin")
