"""Real ``isp serve`` processes on one database: start, wait until ready, SIGKILL, stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TEST_SECRET_KEY
from tests.mikrotik.loaded import PLUGIN_DIR
from tests.plugins.builders import free_port, start_server, until
from tests.plugins.test_sync import _ready, isp


class Cluster:
    """``count`` server processes sharing ``database_url`` (and S3 when given)."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        count: int,
        *,
        s3: dict[str, str] | None = None,
        mikrotik: bool = False,
        **env: str,
    ) -> None:
        base = {
            **os.environ,
            "ISP_DATABASE_URL": database_url,
            "ISP_SECRET_KEY": TEST_SECRET_KEY,
            "ISP_PLUGIN_RELOAD": "false",
            "ISP_LOG_LEVEL": "WARNING",
            "ISP_DATA_DIR": str(tmp_path / "data"),
            **(s3 or {}),
            **env,
        }
        self.envs: list[dict[str, str]] = []
        for n in range(count):
            plugins = tmp_path / f"plugins{n}"
            plugins.mkdir()
            if mikrotik:
                shutil.copytree(
                    PLUGIN_DIR, plugins / "mikrotik",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )  # fmt: skip
            data = str(tmp_path / f"data{n}") if s3 else base["ISP_DATA_DIR"]
            self.envs.append({**base, "ISP_PLUGINS_DIR": str(plugins), "ISP_DATA_DIR": data})
        self.urls: list[str] = []
        self.processes: list[asyncio.subprocess.Process] = []
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> Cluster:
        await isp("user", "add", "alice", "--role", "admin", env=self.envs[0])
        out = await isp("token", "issue", "alice", "--scope", "admin", env=self.envs[0])
        self.headers = {"Authorization": f"Bearer {out.split()[-1]}"}
        for env in self.envs:
            port = free_port()
            self.processes.append(
                await start_server(port, env)
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(timeout=5) as client:
            for url in self.urls:
                await until(lambda u=url: _ready(client, u), within=60)
        return self

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown hook runs, the worker's tasks are left mid-flight."""
        self.processes[index].send_signal(signal.SIGKILL)

    async def __aexit__(self, *exc: Any) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            await asyncio.wait_for(process.wait(), timeout=20)
