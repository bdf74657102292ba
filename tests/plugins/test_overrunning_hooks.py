"""Plugins that overrun their deadlines, against a real server (Hypercorn in its own process).

- An async hook with ``timeout`` 2 that swallows its cancellation and sleeps 30 s: each
  workflow is answered within 3.5 s (504, the connection discarded), other requests are
  served meanwhile, the plugin is quarantined (on every instance) and its next call is a
  fast 503 until an admin enables it again.
- A ``def`` hook in ``time.sleep(120)``: its threads are its plugin's, so ``/readyz`` and a
  plugin upload, which use the core's threads, do not notice.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugins.builders import (
    Server,
    admin_token,
    plugin_files,
    server_env,
    stamp_zip,
    until,
    write_plugin,
)

STUBBORN = """
import asyncio
from isp.plugins import registry

@registry.hook("customer_created", timeout=2)
async def hold_on(customer, db):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(30)  # ignores the cancellation
"""

SLEEPY = """
import time
from isp.plugins import registry

@registry.hook("customer_created", timeout=2)
def nap(customer, db):
    time.sleep(120)
"""

ANSWERED_WITHIN = 3.5  # timeout 2 s + grace 1 s, and the margin the issue allows


async def _served(env: dict[str, str], within: float = 60) -> Server:
    server = Server(env)
    await server.start()
    await server.ready(within)
    return server


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Servers a test starts; stopped afterwards whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()


class Prober:
    """Requests other clients send while a workflow is stuck, with their latencies."""

    def __init__(self, client: httpx.AsyncClient, urls: list[str]) -> None:
        self.client = client
        self.urls = urls
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._probe(url) for url in self.urls))

    async def _probe(self, url: str) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            response = await self.client.get(url)
            self.latencies.append(time.perf_counter() - start)
            self.statuses.append(response.status_code)
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def p95(self) -> float:
        return statistics.quantiles(self.latencies, n=20)[-1]


async def _create(client: httpx.AsyncClient, url: str) -> tuple[int, float, dict[str, Any]]:
    start = time.perf_counter()
    response = await client.post(f"{url}/customers", json={"name": "Ada"})
    return response.status_code, time.perf_counter() - start, response.json()


async def test_a_hook_ignoring_cancellation_is_answered_in_time_and_quarantined(
    database_url: str, tmp_path: Path, servers: list[Server]
) -> None:
    env = server_env(tmp_path, ISP_DATABASE_URL=database_url, ISP_HOOK_GRACE="1",
                     ISP_PLUGIN_SYNC_INTERVAL="0.5")  # fmt: skip
    write_plugin(tmp_path / "plugins", "stubborn", plugin_files(
        "stubborn", handlers=STUBBORN, hooks=["customer_created"]))  # fmt: skip
    token = await admin_token(env)
    servers.append(await _served(env))
    url = servers[0].url
    other: str | None = None
    if not database_url.startswith("sqlite"):  # a second instance on the same database
        (tmp_path / "plugins2").mkdir()
        write_plugin(tmp_path / "plugins2", "stubborn", plugin_files(
            "stubborn", handlers=STUBBORN, hooks=["customer_created"]))  # fmt: skip
        second = {**env, "ISP_PLUGINS_DIR": str(tmp_path / "plugins2"),
                  "ISP_DATA_DIR": str(tmp_path / "data2")}  # fmt: skip
        servers.append(await _served(second))
        other = servers[1].url
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=40) as client:
        # On PostgreSQL other requests reach the database too; on SQLite every query
        # waits while a workflow holds the one connection's transaction (by design of
        # SQLite), so there only the process itself is probed.
        probes = [f"{url}/healthz"]
        if other is not None:
            probes.append(f"{url}/plans?limit=1")
        prober = Prober(client, probes)
        probing = asyncio.create_task(prober.run())
        status, took, abandoned = await _create(client, url)
        prober.stop()
        await probing
        assert status == 504, abandoned
        assert took < ANSWERED_WITHIN
        assert abandoned["type"].endswith("/hook-abandoned")
        assert abandoned["plugin"] == "stubborn"
        assert len(prober.latencies) >= 10
        assert set(prober.statuses) == {200}
        assert prober.p95() < 0.2, sorted(prober.latencies)[-5:]

        plugin = (await client.get(f"{url}/plugins/stubborn")).json()
        assert plugin["status"] == "error"
        assert "ignored its cancellation" in plugin["quarantined"]
        assert plugin["error"] == plugin["quarantined"]

        status, took, problem = await _create(client, url)
        assert (status, problem["plugin"]) == (503, "stubborn")
        assert problem["type"].endswith("/plugin-quarantined")
        assert took < 1.0
        listed = (await client.get(f"{url}/customers")).json()
        assert listed["customers"] == []  # every stuck workflow was rolled back

        if other is not None:

            async def quarantined_there() -> bool:
                body = (await client.get(f"{other}/plugins/stubborn")).json()
                return bool(body.get("quarantined"))

            await until(quarantined_there, within=5)
            assert (await _create(client, other))[0] == 503

        enabled = await client.put(f"{url}/plugins/stubborn/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["quarantined"] is None
        assert enabled.json()["status"] == "active"
        audit = (await client.get(f"{url}/audit")).json()
        actions = [entry["action"] for entry in audit["entries"]]
        assert "quarantine" in actions

        if other is not None:

            async def released_there() -> bool:
                body = (await client.get(f"{other}/plugins/stubborn")).json()
                return body.get("quarantined") is None and body.get("status") == "active"

            await until(released_there, within=5)

        # Six at once (more than PostgreSQL's pool holds): each is answered in time, and
        # no connection is lost for good: the service serves normally right after.
        stuck = await asyncio.gather(*(_create(client, url) for _ in range(6)))
        statuses = {status for status, _, _ in stuck}
        assert 504 in statuses
        assert statuses <= {503, 504}, stuck  # those that came after the quarantine: 503
        assert max(took for _, took, _ in stuck) < ANSWERED_WITHIN, stuck
        for _ in range(10):
            start = time.perf_counter()
            assert (await client.get(f"{url}/plans?limit=1")).status_code == 200
            assert time.perf_counter() - start < 0.5
        listed = (await client.get(f"{url}/customers")).json()
        assert listed["customers"] == []  # every stuck workflow was rolled back


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_sleeping_def_hooks_leave_readyz_and_uploads_alone(
    database_url: str, tmp_path: Path, servers: list[Server]
) -> None:
    """On PostgreSQL, where workflows run side by side (SQLite runs one transaction at a
    time): eight hooks asleep at once, more than the core's own thread pool holds."""
    env = server_env(tmp_path, ISP_DATABASE_URL=database_url, ISP_PLUGIN_THREADS="8",
                     ISP_HOOK_GRACE="60")  # fmt: skip
    write_plugin(tmp_path / "plugins", "sleepy", plugin_files(
        "sleepy", handlers=SLEEPY, hooks=["customer_created"]))  # fmt: skip
    token = await admin_token(env)
    servers.append(await _served(env))
    url = servers[0].url
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=40) as client:
        asleep = await asyncio.gather(*(_create(client, url) for _ in range(8)))
        # each at its deadline (the last ones waited for a pooled connection first)
        assert [status for status, _, _ in asleep] == [504] * 8, asleep

        status, took, problem = await _create(client, url)  # its eight threads are taken
        assert (status, problem["plugin"]) == (503, "sleepy")
        assert problem["type"].endswith("/plugin-busy")
        assert took < 1.0

        start = time.perf_counter()
        ready = await client.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        assert time.perf_counter() - start < 1.0
        start = time.perf_counter()
        files = {"file": ("stamp.zip", stamp_zip(), "application/zip")}
        uploaded = await client.post(f"{url}/plugins/upload", files=files)
        assert uploaded.status_code == 201, uploaded.text
        assert time.perf_counter() - start < 5.0
