"""Behaviour that depends on the real server: Hypercorn processes on one database.

- schemathesis (every phase: examples, coverage, fuzzing, stateful) finds no 5xx, no
  answer outside the documented statuses, content types, headers or schemas;
- a token revoked on one instance is refused there at once and on the other within
  ``ISP_PLUGIN_SYNC_INTERVAL`` (two instances on one SQLite file, and on PostgreSQL);
- ``isp serve`` on a port in use exits within 2 s, non-zero, with one line naming it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.plugins.builders import free_port, start_server, until
from tests.plugins.test_sync import isp, shared_database

__all__ = ["shared_database"]

SYNC_INTERVAL = 0.5
SCHEMATHESIS_EXAMPLES = "30"


def server_env(tmp_path: Path, n: int, database_url: str | None = None) -> dict[str, str]:
    plugins = tmp_path / f"plugins{n}"
    plugins.mkdir(exist_ok=True)
    return {
        **os.environ,
        "ISP_DATABASE_URL": database_url or f"sqlite://{tmp_path / 'isp.sqlite3'}",
        "ISP_DATA_DIR": str(tmp_path / f"data{n}"),
        "ISP_PLUGINS_DIR": str(plugins),
        "ISP_SECRET_KEY": TEST_SECRET_KEY,
        "ISP_PLUGIN_RELOAD": "false",
        "ISP_PLUGIN_SYNC_INTERVAL": str(SYNC_INTERVAL),
        "ISP_LOG_LEVEL": "ERROR",
    }


class Servers:
    def __init__(self, urls: list[str], token: str, env: dict[str, str]) -> None:
        self.urls = urls
        self.token = token
        self.env = env


async def _ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def start_servers(
    tmp_path: Path, count: int, database_url: str | None = None
) -> tuple[Servers, list[asyncio.subprocess.Process]]:
    envs = [server_env(tmp_path, n, database_url) for n in range(count)]
    await isp("user", "add", "alice", "--role", "admin", env=envs[0])
    token = (await isp("token", "issue", "alice", "--scope", "admin", env=envs[0])).split()[-1]
    ports = [free_port() for _ in envs]
    processes = []
    for port, env in zip(ports, envs, strict=True):
        processes.append(
            await start_server(port, env)
        )
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            await until(lambda u=url: _ready(client, u), within=30)
    return Servers(urls, token, envs[0]), processes


async def _serving(tmp_path: Path, database_url: str | None = None) -> AsyncIterator[Servers]:
    found, processes = await start_servers(tmp_path, 2, database_url)
    try:
        yield found
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=15)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """Two instances on one SQLite file."""
    async for found in _serving(tmp_path):
        yield found


@pytest.fixture
async def pg_servers(shared_database: str, tmp_path: Path) -> AsyncIterator[Servers]:
    """Two instances on one PostgreSQL database."""
    async for found in _serving(tmp_path, shared_database):
        yield found


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    servers: Servers, tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(schemathesis), "run", f"{servers.urls[0]}/openapi.json",
        "-H", f"Authorization: Bearer {servers.token}",
        "--checks", "all",
        # positive_data_acceptance expects any schema-valid body to succeed, which
        # references to missing records cannot; allow_header_conformance trips over
        # /plugins/{name} also matching /plugins/upload
        "--exclude-checks", "positive_data_acceptance,allow_header_conformance",
        # revoking the run's own token would end the run's authentication
        "--exclude-path", "/tokens/{prefix}",
        "--max-examples", SCHEMATHESIS_EXAMPLES, "--workers", "1", "--no-color",
        "--seed", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its example database and reports stay out of the repository
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    report = out.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report[-3000:]


async def test_revoked_token_refused_here_at_once_and_elsewhere_within_the_interval(
    servers: Servers,
) -> None:
    await revoke_on_one_refused_on_both(servers)


async def test_revoked_token_refused_elsewhere_within_the_interval_on_postgresql(
    pg_servers: Servers,
) -> None:
    await revoke_on_one_refused_on_both(pg_servers)


async def revoke_on_one_refused_on_both(servers: Servers) -> None:
    first, second = servers.urls
    admin = {"Authorization": f"Bearer {servers.token}"}
    async with httpx.AsyncClient(timeout=5) as client:
        issued = (await client.post(f"{first}/tokens", json={}, headers=admin)).json()
        mine = {"Authorization": f"Bearer {issued['token']}"}
        for url in (first, second):
            assert (await client.get(f"{url}/customers", headers=mine)).status_code == 200
        revoked = await client.delete(f"{first}/tokens/{issued['prefix']}", headers=mine)
        assert revoked.status_code == 204
        assert (await client.get(f"{first}/customers", headers=mine)).status_code == 401

        async def refused_on_second() -> bool:
            return (await client.get(f"{second}/customers", headers=mine)).status_code == 401

        took = await until(refused_on_second, within=SYNC_INTERVAL + 2)
        assert took <= SYNC_INTERVAL + 0.5


async def test_serve_on_a_port_in_use_exits_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "isp", "serve", "--port", str(port),
            env=server_env(tmp_path, 0),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=10)
        took = time.monotonic() - started
    assert process.returncode != 0
    assert took < 2, took
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1, err.decode()
    assert str(port) in lines[0]
    assert "in use" in lines[0]
