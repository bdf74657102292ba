"""A throw-away PostgreSQL cluster on 127.0.0.1 for the test suite.

Found through ``pg_config --bindir`` or Debian's ``/usr/lib/postgresql/<v>/bin``. When the
suite runs as root (CI), the cluster runs as the ``postgres`` system user, because
``initdb`` refuses root. ``ISP_TEST_POSTGRES_URL`` skips all of this and uses that server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        candidates += sorted((p / "bin" for p in debian.iterdir()), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise RuntimeError(
        "PostgreSQL server binaries not found: install Debian's 'postgresql' package "
        "(make test does it) or set ISP_TEST_POSTGRES_URL"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One throw-away cluster that a test may also stop, crash, pause and start again.

    ``durable``: commits reach the WAL before they are acknowledged, so a crash
    (``stop("immediate")``) loses none; the suite's shared cluster trades that for speed.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="isp-pg-"))
        self.datadir = self.root / "data"
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start (again) on the same port; waits until it accepts connections."""
        commit = "on" if self.durable else "off"
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            f"-c synchronous_commit={commit} -c full_page_writes=off -c max_connections=300"
        )
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: every server process quits at once, as in a crash."""
        self._pg_ctl("-m", mode, "stop", check=False)

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *(int(child) for child in children)]

    def pause(self) -> list[int]:
        """SIGSTOP the whole server: connections stay open and nothing answers."""
        pids = self.processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def resume(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            check=check,
            capture_output=True,
        )


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh cluster, yield ``postgres://postgres@127.0.0.1:<port>/postgres``."""
    cluster = Cluster()
    cluster.init()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.remove()
