"""`python -m <module> <args>` for the tests, without paying the interpreter's start-up each time.

A fresh `python -m demt_exp` spends ~4.5 s importing torch, torchvision, timm and Hydra before its first line
of work, on a tiny job more than the job itself. One server per test worker imports them once and forks a
child per command; the child takes the command's working folder, environment, argv, stdin (/dev/null) and
output files, runs the module as `__main__` the way `python -m` does, and ends through the interpreter's
normal exit (threads joined, atexit handlers, buffers flushed). Each child starts from the same pristine
imported state, never from another command's.

What a fresh interpreter reads only at start-up cannot change in a fork, so a command whose environment
differs from the server's in such a variable (threads, allocator, Python, CUDA, torch settings), or that
runs in another folder, gets a fresh interpreter; entries put in front of PYTHONPATH (a user's own package)
are the exception, the child puts them on sys.path where start-up would. DEMT_TEST_FRESH_INTERPRETERS=1
gives every command a fresh one. Commands whose process is the subject (signals, start-up time, packaging)
start their own.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

# Read by the interpreter, the BLAS/OpenMP runtimes, the allocator or torch when they load, not later.
START_UP_PREFIXES = (
    "PYTHON",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "GOMP_",
    "LD_",
    "MALLOC_",
    "TORCH",
    "CUDA",
    "NCCL",
    "TMP",
)
FRESH_ENV = "DEMT_TEST_FRESH_INTERPRETERS"
PRELOAD = ("demt_exp.engine.trainer", "demt_exp.engine.run_folder", "demt_exp.config.checks")


def added_paths(env: dict[str, str], server_env: dict[str, str]) -> list[str] | None:
    """The entries a command's PYTHONPATH puts before the server's (a user's own package), or None when it
    is not the server's with entries in front."""
    ours, theirs = env.get("PYTHONPATH", ""), server_env.get("PYTHONPATH", "")
    entries, tail = ours.split(os.pathsep) if ours else [], theirs.split(os.pathsep) if theirs else []
    if len(entries) < len(tail) or entries[len(entries) - len(tail) :] != tail:
        return None
    return entries[: len(entries) - len(tail)]


def _differs_at_start_up(env: dict[str, str], server_env: dict[str, str]) -> bool:
    keys = set(env) ^ set(server_env) | {key for key in env.keys() & server_env.keys() if env[key] != server_env[key]}
    if "PYTHONPATH" in keys and added_paths(env, server_env) is not None:
        keys.discard("PYTHONPATH")  # entries in front: the child puts them on sys.path as start-up would
    return any(key.startswith(START_UP_PREFIXES) for key in keys)


class WarmPython:
    """The client: one server process, one command at a time (a test worker runs its tests in turn)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = str(cwd)
        self.log = tempfile.TemporaryFile()  # the server's own stderr (its imports' warnings, a crash)
        self.server = subprocess.Popen(
            [sys.executable, __file__, self.cwd],
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.pending = b""
        hello = self._reply(timeout=300)
        self.env: dict[str, str] = hello["env"] if hello and hello.get("ready") else {}
        self.ready = bool(self.env)
        atexit.register(self.close)

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        """The server's next line, or None when none came within `timeout` s or the server ended."""
        deadline = time.monotonic() + timeout
        fd = self.server.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def serves(self, env: dict[str, str], cwd: Path) -> bool:
        return self.ready and str(cwd) == self.cwd and not _differs_at_start_up(env, self.env)

    def run(self, cmd: list[str], env: dict[str, str], out_dir: Path, timeout: float) -> subprocess.CompletedProcess:
        """cmd = [python, "-m", module, *args], run in a forked child; returns what subprocess.run would."""
        out_dir.mkdir(parents=True, exist_ok=True)
        stdout, stderr = out_dir / "stdout", out_dir / "stderr"
        request = {"module": cmd[2], "args": cmd[3:], "env": env, "cwd": self.cwd}
        request |= {"stdout": str(stdout), "stderr": str(stderr)}
        assert self.server.stdin is not None
        self.server.stdin.write(json.dumps(request).encode() + b"\n")
        self.server.stdin.flush()
        started = self._reply(timeout=60)
        if started is None:
            raise RuntimeError(f"the warm interpreter did not start {cmd}: {self._server_error()}")
        finished = self._reply(timeout=timeout)
        if finished is None:
            os.kill(started["pid"], signal.SIGKILL)
            self._reply(timeout=60)
            raise subprocess.TimeoutExpired(cmd, timeout, _text(stdout), _text(stderr))
        return subprocess.CompletedProcess(cmd, finished["returncode"], _text(stdout), _text(stderr))

    def _server_error(self) -> str:
        self.ready = False
        self.server.kill()
        self.server.wait()
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.stdin.close()  # type: ignore[union-attr]
            self.server.wait(timeout=30)


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace") if path.is_file() else ""


_SERVER: WarmPython | None = None


def warm_server(cwd: Path) -> WarmPython | None:
    """This worker's server (started on first use), or None where every command gets a fresh interpreter."""
    global _SERVER
    if os.environ.get(FRESH_ENV) == "1":
        return None
    if _SERVER is None:
        _SERVER = WarmPython(cwd)
    return _SERVER if _SERVER.ready else None


# ----- the server, in its own interpreter -----


def _remake(folder: tempfile.TemporaryDirectory) -> None:
    """A temporary folder made at import (wandb's media and artifact folders) belongs to one process, which
    removes it at its exit: a child gets a new one, as a fresh interpreter would, and leaves the server's."""
    folder._finalizer.detach()  # type: ignore[attr-defined]
    base = os.path.basename(folder.name)
    suffix = base[len("tmp") + 8 :] if base.startswith("tmp") else ""  # mkdtemp: prefix, 8 random, suffix
    folder.name = tempfile.mkdtemp(suffix, dir=os.path.dirname(folder.name))
    folder._finalizer = weakref.finalize(
        folder,
        folder._cleanup,
        folder.name,
        warn_message=f"Implicitly cleaning up {folder!r}",
        ignore_errors=folder._ignore_cleanup_errors,
    )  # type: ignore[attr-defined]


def _child(
    request: dict[str, Any],
    added: dict[str, str],
    own_folders: list[tempfile.TemporaryDirectory],
    started_with: dict[str, str],
) -> None:
    """In the forked child: become the command, then end through SystemExit (the interpreter's own exit)."""
    import runpy

    files = [os.open(os.devnull, os.O_RDONLY)]
    files += [os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for name in ("stdout", "stderr")]
    for fd, file in enumerate(files):
        os.dup2(file, fd)
        os.close(file)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**added, **request["env"]})  # what the imports set where the command did not
    sys.path[1:1] = added_paths(request["env"], started_with) or []  # after the working folder, as -m has it
    for folder in own_folders:
        _remake(folder)
    sys.argv = ["-m", *request["args"]]  # runpy puts the module's file first, as `python -m` does
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh interpreter's global numpy generator starts from the OS
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as CPython ends on an uncaught Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(0)


def _serve(cwd: str) -> None:
    sys.path[0] = cwd  # `python -m` puts the working folder first, not this file's folder
    import importlib

    started_with = dict(os.environ)
    for module in PRELOAD:
        importlib.import_module(module)
    added = {key: value for key, value in os.environ.items() if key not in started_with}  # e.g. torch's cache dir
    own_folders = [item for item in gc.get_objects() if isinstance(item, tempfile.TemporaryDirectory)]
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing but the protocol may reach the client's pipe
    protocol.write(json.dumps({"ready": True, "env": started_with, "added": added}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            protocol.close()
            _child(json.loads(line), added, own_folders, started_with)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        protocol.flush()
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        protocol.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
