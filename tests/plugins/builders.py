"""Builders for plugin tests: plugin folders and zips, real server processes, polling.

One home for what plugin tests need to build, so a test says only what is special
about its plugin (a handler, a manifest field) and waits on conditions, not on time.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TEST_SECRET_KEY

INIT = "from isp.plugins import Plugin\n\nplugin = Plugin()\n"


def plugin_files(
    name: str,
    version: str = "1.0.0",
    *,
    handlers: str | None = None,
    init: str = INIT,
    hooks: list[Any] | None = None,
    **manifest: Any,
) -> dict[str, str]:
    """The files of a plugin: manifest, ``__init__.py`` and (optionally) ``handlers.py``."""
    body = {"name": name, "version": version, "description": f"{name} plugin",
            "hooks": hooks if hooks is not None else [], **manifest}  # fmt: skip
    files = {"manifest.json": json.dumps(body), "__init__.py": init}
    if handlers is not None:
        files["handlers.py"] = handlers
    return files


def write_plugin(plugins_dir: Path, name: str, files: Mapping[str, str]) -> Path:
    folder = plugins_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    return folder


def zip_of(name: str, files: Mapping[str, str], *, folder: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, text in files.items():
            archive.writestr(f"{name}/{rel}" if folder else rel, text)
    return buffer.getvalue()


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check`` holds; fails after ``within`` seconds."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of an ``isp`` process on SQLite and a local object store."""
    (tmp_path / "plugins").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ISP_DATABASE_URL": f"sqlite://{tmp_path / 'isp.sqlite3'}",
        "ISP_DATA_DIR": str(tmp_path / "data"),
        "ISP_PLUGINS_DIR": str(tmp_path / "plugins"),
        "ISP_SECRET_KEY": TEST_SECRET_KEY,
        "ISP_PLUGIN_RELOAD": "false",
        "ISP_LOG_LEVEL": "WARNING",
        **overrides,
    }


async def isp(*args: str, env: dict[str, str], check: bool = True) -> tuple[int, str, str]:
    """Run the ``isp`` command; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "isp", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert not check or process.returncode == 0, err.decode()
    return process.returncode or 0, out.decode(), err.decode()


async def admin_token(env: dict[str, str]) -> str:
    await isp("user", "add", "alice", "--role", "admin", env=env)
    return (await isp("token", "issue", "alice", "--scope", "admin", env=env))[1].split()[-1]


class Server:
    """A real ``isp serve`` process (Hypercorn) on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "isp", "serve", "--port", str(self.port), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def ready(self, within: float) -> float:
        async with httpx.AsyncClient(timeout=2) as client:

            async def answers() -> bool:
                try:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            return await until(answers, within)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing runs after it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
