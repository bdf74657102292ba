"""How a sandboxed worker process is started: the bubblewrap command line.

One small class on purpose: a launcher (:class:`Launcher`) answers ``command(spec, fd)``
and ``environment()``, so a Podman launcher (the production option, where its runtime
may call ``setrlimit``) can be added next to this one without touching the host side.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import isp
from isp.plugins.sandbox.errors import SandboxUnavailable

if TYPE_CHECKING:
    from isp.config import Settings

WORKER_MODULE: Final = "isp.plugins.sandbox.worker"
UID_BASE: Final = 200_000  # per-plugin user ids, so RLIMIT_NPROC counts one plugin only
UID_SPAN: Final = 100_000
SYSTEM_DIRS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits the worker sets on itself (setrlimit) before importing the plugin."""

    memory_mb: int = 1024
    cpu_seconds: int = 600
    files: int = 256
    processes: int = 32

    @classmethod
    def from_settings(cls, settings: Settings, plugin: str | None = None) -> Limits:
        """The deployment's limits (``ISP_SANDBOX_*``), with ``plugin``'s own where the
        operator set them (``ISP_SANDBOX_LIMITS__<PLUGIN>__<LIMIT>``)."""
        own = settings.sandbox_limits.get(plugin) if plugin is not None else None
        chosen = cls(
            memory_mb=settings.sandbox_memory_mb,
            cpu_seconds=settings.sandbox_cpu_seconds,
            files=settings.sandbox_files,
            processes=settings.sandbox_processes,
        )
        if own is None:
            return chosen
        return replace(chosen, **own.model_dump(exclude_none=True))


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One plugin's worker: its name (module ``isp_plugins.<name>``), folder and grants."""

    name: str
    folder: Path
    limits: Limits = Limits()
    network: bool = False

    @property
    def uid(self) -> int:
        """The user the worker runs as when the service runs as root."""
        return UID_BASE + zlib.crc32(self.name.encode()) % UID_SPAN


class Launcher(Protocol):
    """What the host needs of a launcher: the argv of one worker and the environment
    the launcher itself runs with (the worker's is set inside the argv)."""

    @property
    def name(self) -> str: ...

    def command(self, spec: WorkerSpec, fd: int) -> list[str]: ...

    def environment(self) -> dict[str, str]: ...


class BubblewrapLauncher:
    """Builds ``bwrap ... python -m isp.plugins.sandbox.worker`` for one plugin.

    The worker sees read-only: the system libraries, the Python runtime, the virtualenv,
    the ``isp`` package and the plugin's folder; a private ``/tmp``, minimal ``/proc`` and
    ``/dev``; no network unless granted; none of the service's environment.
    """

    name = "bubblewrap"

    def __init__(self, bwrap: str | None = None) -> None:
        found = bwrap or shutil.which("bwrap")
        if not found or not os.access(found, os.X_OK):
            raise SandboxUnavailable("bubblewrap is not installed")
        self.bwrap = found

    def command(self, spec: WorkerSpec, fd: int) -> list[str]:
        """The argv; ``fd`` is the worker's end of the protocol socket (inherited)."""
        args = [self.bwrap, "--die-with-parent", "--new-session", "--clearenv"]
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not spec.network:
            args.append("--unshare-net")
        root = os.geteuid() == 0
        if not root:
            args.append("--unshare-user")  # unprivileged bwrap needs its own user namespace
        for system in SYSTEM_DIRS:
            path = Path(system)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), system]
            elif path.is_dir():
                args += ["--ro-bind", system, system]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        binds = _runtime_dirs() + [spec.folder.resolve()]
        args += _parents(binds)
        for path in binds:  # after /tmp: a plugin folder under /tmp stays visible
            args += ["--ro-bind", str(path), str(path)]
        args += ["--chdir", "/tmp"]
        args += ["--hostname", "sandbox"]
        for key, value in self.environment().items():
            args += ["--setenv", key, value]
        config = {
            "fd": fd,
            "name": spec.name,
            "folder": str(spec.folder.resolve()),
            "limits": asdict(spec.limits),
            "uid": spec.uid if root else None,
        }
        return [*args, sys.executable, "-I", "-B", "-m", WORKER_MODULE, json.dumps(config)]

    def environment(self) -> dict[str, str]:
        """The worker's whole environment: nothing of the service's (no key, no DB URL)."""
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MALLOC_ARENA_MAX": "2",  # per-thread arenas would eat the address-space limit
            "PYDANTIC_DISABLE_PLUGINS": "1",  # no entry-point scan, no third-party code at start
        }


def _runtime_dirs() -> list[Path]:
    """The Python runtime, the virtualenv and the ``isp`` package, outside /usr, deduplicated."""
    found: list[Path] = []
    for raw in (sys.base_prefix, sys.prefix, str(Path(isp.__file__).parent)):
        path = Path(raw).resolve()
        if path.is_relative_to("/usr") or any(path.is_relative_to(p) for p in found):
            continue
        found = [p for p in found if not p.is_relative_to(path)] + [path]
    return found


def _parents(paths: list[Path]) -> list[str]:
    """``--dir`` for each mount point's parents, world-readable (bwrap's default is 0700)."""
    parents: set[Path] = set()
    for path in paths:
        parents.update(p for p in path.parents if p != Path("/"))
    args: list[str] = []
    for parent in sorted(parents, key=lambda p: len(p.parts)):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args
