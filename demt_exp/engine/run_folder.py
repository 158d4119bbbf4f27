"""A command's Hydra run folder: one per job, and none left behind by a job that did no work.

Hydra creates the folder (with `.hydra/` and the job's log) before the command runs. Under
torchrun or srun every process composes its own `${now:...}`, so each rank would create a folder
of its own a second apart; ranks other than 0 point Hydra at a temporary folder instead (removed
at exit) and take rank 0's folder over the process group. A job that stops on a config error or
a Ctrl-C before writing anything removes the folder Hydra made for it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from demt_exp.engine.launch_env import launch_rank
from demt_exp.utils.errors import INTERRUPTED_EXIT, one_line_errors

MULTIRUN_FLAGS = ("-m", "--multirun")


def redirect_other_ranks(argv: list[str], rank: int | None = None) -> Path | None:
    """On ranks > 0 of a multi-process launch, append overrides that put Hydra's own files in a
    temporary folder (removed at exit); returns it (None on rank 0 and in multirun mode)."""
    rank = launch_rank() if rank is None else rank
    if rank == 0 or any(flag in argv for flag in MULTIRUN_FLAGS):
        return None
    scratch = Path(tempfile.mkdtemp(prefix=f"demt_exp_rank{rank}_"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    return scratch


def holds_only_hydra_files(folder: Path) -> bool:
    """True for a folder with nothing but what Hydra writes before a job starts: `.hydra/` and logs."""
    return folder.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in folder.iterdir())


def remove_if_unused(folder: str | Path) -> bool:
    """Remove a run folder that holds only Hydra's own files, and the parents inside the working folder
    that this leaves empty (`outputs/<date>/`, `outputs/`)."""
    folder, cwd = Path(folder).absolute(), Path.cwd().absolute()
    if folder == cwd or folder in cwd.parents or not holds_only_hydra_files(folder):
        return False  # never the folder the user works in (hydra.run.dir=.) or one above it
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == cwd or cwd not in parent.parents:
            break
        try:
            parent.rmdir()  # fails, and so keeps it, when anything else is inside
        except OSError:
            break
    return True


def run_job(job: Callable[[], object], out_dir: str | Path, interrupted: str = "") -> object:
    """Run a command's job in its Hydra folder (`errors.one_line_errors`): a user mistake or a Ctrl-C that
    reaches here ends in one line, and a folder the job left nothing in is removed. `interrupted` is what the
    line adds after a Ctrl-C when the folder holds something ({out_dir} is filled in)."""

    def tidy(code: int) -> str:
        if remove_if_unused(out_dir) or code != INTERRUPTED_EXIT:
            return ""
        return interrupted.format(out_dir=out_dir)

    with one_line_errors(after=tidy):
        return job()
    return None  # not reached: one_line_errors exits
