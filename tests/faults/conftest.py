"""Real dependencies to break: a PostgreSQL cluster and an S3 server of the fault tests' own.

Stopping or pausing them must not disturb the rest of the suite, so neither is the
session's shared one. The service under test is a real ``isp serve`` (Hypercorn) whose
log is kept, with short deadlines so an outage is judged in seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import s3_settings
from tests.mikrotik.loaded import PLUGIN_DIR
from tests.pgcluster import Cluster
from tests.plugins.builders import Server, admin_token, server_env
from tests.routeros import RouterOSServer
from tests.s3server import S3Process

DEADLINE = 2.0
"""``ISP_DB_TIMEOUT`` and ``ISP_S3_TIMEOUT`` of the service under test."""
MARGIN = 1.0
"""Every answer comes within the deadline plus this."""
RECOVERY = 5.0
"""Normal service at the latest this long after the dependency is back."""


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster(durable=True)  # a crash must not lose what was answered 201
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def s3_process() -> Iterator[S3Process]:
    server = S3Process()
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def fresh_database(cluster: Cluster) -> str:
    name = f"isp_faults_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


async def rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql``, read straight from the database (not through the service)."""
    if database_url.startswith("sqlite://"):
        path = database_url.removeprefix("sqlite://")

        def read() -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as connection:
                return list(connection.execute(sql))

        return await asyncio.to_thread(read)
    connection = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


class LoggedServer(Server):
    """``isp serve`` whose JSON log lines are kept in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(env)
        self.log = log

    async def start(self) -> None:
        sink = await asyncio.to_thread(open, self.log, "wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "isp", "serve", "--port", str(self.port), env=self.env,
                stdout=asyncio.subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip
        finally:
            sink.close()

    def entries(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                found.append({"msg": line, "level": "raw"})
        return found


def fault_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A service with short deadlines and the MikroTik plugin (for backups)."""
    shutil.copytree(
        PLUGIN_DIR,
        tmp_path / "plugins" / "mikrotik",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return server_env(
        tmp_path,
        ISP_DB_TIMEOUT=str(DEADLINE),
        ISP_S3_TIMEOUT=str(DEADLINE),
        ISP_PLUGIN_SYNC_INTERVAL="0.5",
        **overrides,
    )


def s3_env(endpoint: str) -> dict[str, str]:
    return {f"ISP_{key.upper()}": str(value) for key, value in s3_settings(endpoint).items()}


@asynccontextmanager
async def serving(env: dict[str, str], log: Path) -> AsyncIterator[LoggedServer]:
    server = LoggedServer(env, log)
    await server.start()
    try:
        await server.ready(within=60)
        yield server
    finally:
        await server.stop()


async def backup_ready_device(url: str, headers: dict[str, str], router: RouterOSServer) -> int:
    """A router the MikroTik plugin backs up (export and encrypted binary)."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        response = await client.put("/plugins/mikrotik/settings", json={"backup_key": "k-1"})
        assert response.status_code == 200, response.text
        device = {"name": "core-1", "vendor": "mikrotik", "host": router.host,
                  "port": router.port, "username": "admin", "password": "secret"}  # fmt: skip
        response = await client.post("/devices", json=device)
        assert response.status_code == 201, response.text
        device_id = int(response.json()["id"])
        response = await client.post(f"/devices/{device_id}/backup")
        assert response.status_code == 201, response.text
        return device_id


async def token_for(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {await admin_token(env)}"}
