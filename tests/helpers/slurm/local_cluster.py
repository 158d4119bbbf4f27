"""A real single-node SLURM for the test suite: munged, slurmctld and slurmd on this machine.

    python tests/helpers/slurm/local_cluster.py install        # Debian's packages, when missing (root)
    python tests/helpers/slurm/local_cluster.py start DIR      # config + daemons under DIR; prints SLURM_CONF
    python tests/helpers/slurm/local_cluster.py stop DIR       # SIGTERM exactly the PIDs in DIR's pid files

Everything lives under one folder (config, state, spool, logs, pid files, the munge socket);
no systemd, cgroups or accounting. The daemons are tracked by their PID files and only those
PIDs are stopped. `sacct` needs accounting, which a test cluster does not have, so DIR/bin
holds a stand-in that answers submitit's query from `scontrol` (put DIR/bin first on PATH).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged")
DAEMONS = ("slurmctld", "slurmd", "munged")
HERE = Path(__file__).resolve().parent


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here (no packages and no way to install them, or a daemon would not start)."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def install() -> None:
    """apt-get the Debian packages when a binary is missing (needs root and the package archive)."""
    if not missing_binaries():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterUnavailable(
            f"SLURM binaries {missing_binaries()} are missing and this is not a root "
            f"Debian machine that could apt-get {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise ClusterUnavailable(f"{' '.join(command)} failed: {done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_line(hostname: str) -> str:
    """This machine as slurmd sees it (CPUs, sockets, cores, memory)."""
    slurmd = shutil.which("slurmd") or "/usr/sbin/slurmd"
    found = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=60).stdout.splitlines()[0]
    fields = [f for f in found.split() if not f.startswith(("NodeName=", "UpTime="))]
    return f"NodeName={hostname} NodeAddr=127.0.0.1 {' '.join(fields)} State=UNKNOWN"


@dataclass(frozen=True)
class Cluster:
    """A started cluster: its folder, config file and the environment its clients need."""

    root: Path
    partition: str = "debug"

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF and the sacct stand-in first on PATH."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}"}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(command), env=self.env(), capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
        return done


def munge_folder(root: Path) -> Path:
    """munged runs as user munge, which must reach its folder: one under /tmp (the test's own folder
    may sit below a mode-700 parent), named in `root/munge_folder`."""
    record = root / "munge_folder"
    if record.is_file():
        return Path(record.read_text().strip())
    folder = Path(tempfile.mkdtemp(prefix="demt-munge-", dir="/tmp"))
    record.write_text(str(folder))
    return folder


def write_config(root: Path) -> Path:
    hostname = socket.gethostname()
    for sub in ("state", "spool", "bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = [
        "ClusterName=demt-test",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_folder(root) / 'munge.socket.2'}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MailProg=/bin/true",
        "KillWait=30",
        "MinJobAge=600",
        "InactiveLimit=0",
        "SchedulerParameters=sched_interval=1",
        "MessageTimeout=20",
        _node_line(hostname),
        f"PartitionName=debug Nodes={hostname} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    stand_in = root / "bin" / "sacct"
    shutil.copy(HERE / "sacct_from_scontrol.py", stand_in)
    stand_in.chmod(0o755)
    return conf


def _start_munge(root: Path) -> None:
    munge_dir = munge_folder(root)
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, timeout=60)
    shutil.chown(munge_dir, user="munge", group="munge")
    munge_dir.chmod(0o711)  # munged refuses a socket folder of mode 700
    munged = shutil.which("munged") or "/usr/sbin/munged"
    subprocess.run(
        [
            "runuser",
            "-u",
            "munge",
            "--",
            munged,
            f"--socket={munge_dir / 'munge.socket.2'}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
            f"--key-file={key}",
        ],
        check=True,
        timeout=60,
    )


def _pid_files(root: Path) -> dict[str, Path]:
    return {
        "slurmd": root / "slurmd.pid",
        "slurmctld": root / "slurmctld.pid",
        "munged": munge_folder(root) / "munged.pid",
    }


def _wait(predicate, timeout: float, what: str, root: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    logs = "".join(f"\n--- {p.name}:\n{p.read_text()[-1500:]}" for p in root.glob("*.log"))
    raise ClusterUnavailable(f"{what} within {timeout:.0f} s{logs}")


def start(root: str | Path) -> Cluster:
    """Write the config and start munged, slurmctld and slurmd; return once the node is idle."""
    install()
    root = Path(root).resolve()
    conf = write_config(root)
    cluster = Cluster(root)
    env = cluster.env()
    _start_munge(root)
    for daemon in ("slurmctld", "slurmd"):
        binary = shutil.which(daemon) or f"/usr/sbin/{daemon}"
        done = subprocess.run([binary, "-f", str(conf)], env=env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            stop(root)
            raise ClusterUnavailable(f"{daemon} did not start: {done.stderr}")

    def node_idle() -> bool:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
        return state.stdout.strip() == "idle"

    try:
        _wait(node_idle, 60, "the node did not become idle", root)
    except ClusterUnavailable:
        stop(root)
        raise
    return cluster


def stop(root: str | Path) -> None:
    """SIGTERM each daemon named in the pid files (slurmctld saves its state), then wait for it."""
    root = Path(root)
    for name, pid_file in _pid_files(root).items():
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    if (root / "munge_folder").is_file():
        shutil.rmtree(munge_folder(root), ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "install":
        install()
        print("SLURM binaries present:", ", ".join(BINARIES))
        return 0
    if len(argv) < 2:
        print(f"usage: local_cluster.py {argv[0]} DIR", file=sys.stderr)
        return 2
    if argv[0] == "start":
        print(f"export SLURM_CONF={start(argv[1]).conf}")
    else:
        stop(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
