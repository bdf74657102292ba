"""The outbox with real ``isp serve`` processes: a crash between the commit and the
delivery (SIGKILL) loses nothing, and two instances on one PostgreSQL share the rows
without delivering one twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from isp import db
from isp.config import Settings
from isp.core.models import Customer
from isp.plugins import outbox
from tests.plugins.builders import (
    Server,
    admin_token,
    eventually,
    ledger_files,
    ledger_notes,
    server_env,
    write_plugin,
)

ROWS = 500


def notes(ledger: Path, what: str) -> list[dict[str, Any]]:
    return [n for n in ledger_notes(ledger) if n["what"] == what]


async def nothing_pending(server: Server, token: str) -> bool:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answer = await http.get(
            "/outbox?status=pending", headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 200, answer.text
    return answer.json()["outbox"] == []


def instance_env(tmp_path: Path, ledger: Path, database_url: str, **extra: str) -> dict[str, str]:
    """One instance's environment, with the ledger plugin in its plugins folder."""
    env = server_env(
        tmp_path,
        ISP_DATABASE_URL=database_url,
        ISP_OUTBOX_LEASE="2",
        ISP_OUTBOX_POLL_INTERVAL="0.2",
        **extra,
    )
    write_plugin(tmp_path / "plugins", "ledger", ledger_files(ledger))
    return env


async def test_a_delivery_cut_by_a_crash_is_delivered_after_the_restart(
    database_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    env = instance_env(tmp_path, ledger, database_url)
    token = await admin_token(env)
    (ledger / "hold").touch()  # the delivery starts, then waits: the commit is long done
    first, second = Server(env), Server(env)
    try:
        await first.start()
        await first.ready(within=30)
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
            created = await http.post(
                "/customers", json={"name": "Ada"}, headers={"Authorization": f"Bearer {token}"}
            )
        assert created.status_code == 201, created.text
        customer_id = created.json()["id"]
        [started] = await eventually(lambda: notes(ledger, "started"), within=10)
        assert started["id"] == customer_id

        first.kill()
        assert first.process is not None
        await first.process.wait()
        (ledger / "hold").unlink()
        assert notes(ledger, "done") == []

        await second.start()
        await second.ready(within=30)
        [delivered] = await eventually(lambda: notes(ledger, "done"), within=15)
        assert delivered["key"] == started["key"]  # the same idempotency key
        assert delivered["id"] == customer_id
        assert delivered["attempt"] == 2
        assert delivered["pid"] != started["pid"]
        assert await eventually(lambda: nothing_pending(second, token), within=5)
    finally:
        await first.stop()
        await second.stop()


@pytest.fixture
async def shared_database(pg_url: str) -> AsyncIterator[str]:
    name = f"isp_outbox_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def write_rows(database_url: str, count: int) -> None:
    """``count`` customers with an after-commit row each, nobody's claim on them: what
    instances find after a restart, or after a burst another instance could not take."""
    await db.init_db(Settings(database_url=database_url))
    try:
        await db.migrate()
        await Customer.bulk_create([Customer(name=f"c{n}") for n in range(count)])
        for customer in await Customer.all().order_by("id"):
            await outbox.enqueue(
                outbox.AFTER_COMMIT,
                event="customer_created",
                plugin="ledger",
                hook="handlers.on_customer",
                subject=customer,
            )
    finally:
        await db.close_db()


async def test_two_instances_deliver_500_rows_with_none_twice(
    shared_database: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    await write_rows(shared_database, ROWS)
    envs = [instance_env(tmp_path / f"i{n}", ledger, shared_database) for n in range(2)]
    token = await admin_token(envs[0])
    (ledger / "hold").touch()  # each instance fills its delivery slots, then both go on
    servers = [Server(env) for env in envs]
    try:
        for server in servers:
            await server.start()
        for server in servers:
            await server.ready(within=30)
        await eventually(lambda: len({n["pid"] for n in notes(ledger, "started")}) == 2, 15)
        (ledger / "hold").unlink()

        await eventually(lambda: len(notes(ledger, "done")) >= ROWS, within=60)
        delivered = notes(ledger, "done")
        keys = [n["key"] for n in delivered]
        assert len(keys) == ROWS
        assert len(set(keys)) == ROWS  # no row delivered twice
        assert len({n["id"] for n in delivered}) == ROWS
        assert {n["pid"] for n in delivered} == {n["pid"] for n in notes(ledger, "started")}
        assert len({n["pid"] for n in delivered}) == 2
        assert all(n["attempt"] == 1 for n in delivered)
        assert await eventually(lambda: nothing_pending(servers[0], token), within=5)
        async with httpx.AsyncClient(base_url=servers[0].url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {token}"}
            failed = await http.get("/outbox?status=failed", headers=auth)
        assert failed.json()["outbox"] == []
    finally:
        for server in servers:
            await server.stop()
