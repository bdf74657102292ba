"""PostgreSQL crashes (immediate stop) or hangs (SIGSTOP) under load and during backups.

The service must answer every request within ``ISP_DB_TIMEOUT`` plus a second plus what the
request does besides waiting on the database (at most the longest healthy request of its
kind before the fault; ``tests.faults.load.assert_honest`` says why each term is owed),
fail only with a 503 naming the database, leave nothing half-written and serve normally
again within 5 s of the database coming back, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from isp.storage import LocalObjectStore
from tests.faults.conftest import (
    DEADLINE,
    MARGIN,
    RECOVERY,
    backup_ready_device,
    fault_env,
    fresh_database,
    rows,
    serving,
    token_for,
)
from tests.faults.load import (
    Answer,
    Load,
    assert_honest,
    assert_recovered,
    call,
    in_flight_at,
    own_work,
    summary,
)
from tests.pgcluster import Cluster
from tests.routeros import RouterOSServer


async def create_customer(client: httpx.AsyncClient, ref: str) -> Answer:
    return await call(client, "customer", ref, client.post("/customers", json={"name": ref}))


async def read_customers(client: httpx.AsyncClient, ref: str) -> Answer:
    return await call(client, "list", "", client.get("/customers", params={"q": "n1"}))


async def readyz(client: httpx.AsyncClient, ref: str) -> Answer:
    return await call(client, "readyz", "", client.get("/readyz"))


def ok(answers: list[Answer], kind: str) -> int:
    return sum(1 for a in answers if a.kind == kind and 200 <= a.status < 300)


@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_database_outage_is_a_prompt_503_and_heals_without_restart(
    fault: str, pg_cluster: Cluster, tmp_path: Path
) -> None:
    database_url = await fresh_database(pg_cluster)
    env = fault_env(tmp_path, ISP_DATABASE_URL=database_url)
    headers = await token_for(env)
    async with RouterOSServer() as router, serving(env, tmp_path / "isp.log") as server:
        device_id = await backup_ready_device(server.url, headers, router)

        async def backup(client: httpx.AsyncClient, ref: str) -> Answer:
            return await call(client, "backup", ref, client.post(f"/devices/{device_id}/backup"))

        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            first = (await client.post("/customers", json={"name": "first"})).json()["id"]

        async def read_customer(client: httpx.AsyncClient, ref: str) -> Answer:
            """A read by primary key: straight from a pooled connection, not Tortoise's."""
            return await call(client, "read", "", client.get(f"/customers/{first}"))

        load = Load(
            server.url,
            headers,
            timeout=DEADLINE + 10,
            requests=[
                create_customer,
                create_customer,
                create_customer,
                read_customers,
                read_customer,
                readyz,
            ],
            flights=[backup],
        )
        async with load:
            await load.answered(
                lambda a: ok(a, "customer") >= 30 and ok(a, "read") >= 5 and ok(a, "backup") >= 1,
                60,
            )
            faulted = time.monotonic()
            paused = await asyncio.to_thread(pg_cluster.pause) if fault == "hang" else None
            if paused is None:
                await asyncio.to_thread(pg_cluster.stop, "immediate")
            broken = time.monotonic()
            await load.answered(
                lambda a: sum(1 for x in a if x.started > faulted and x.status == 503) >= 10, 30
            )
            if paused is not None:
                pg_cluster.resume(paused)
            else:
                await asyncio.to_thread(pg_cluster.start)
            back = time.monotonic()
            await load.answered(
                lambda a: len([x for x in a if x.started > back + RECOVERY]) >= 30, 30
            )

    answers = load.answers
    assert 200 <= len(answers) <= 1000
    assert sum(1 for a in answers if a.status == 503) >= 10
    work = own_work(answers, faulted)
    print(f"\ndatabase {fault}:\n{summary(answers, DEADLINE + MARGIN, work)}")
    assert_honest(answers, "database", DEADLINE + MARGIN, work)
    assert_recovered(answers, back + RECOVERY)

    # Nothing half-written: every customer answered 201 exists, and any other is one whose
    # request was cut by the fault (its COMMIT may have reached the server first).
    created = {a.ref for a in answers if a.kind == "customer" and a.status == 201} | {"first"}
    cut = {a.ref for a in in_flight_at(answers, faulted, broken) if a.kind == "customer"}
    stored = {name for (name,) in await rows(database_url, "SELECT name FROM customer")}
    assert created <= stored
    assert stored - created <= cut
    # Every backup row's object exists; an object without a row only from a backup cut.
    keys = {key for (key,) in await rows(database_url, "SELECT object_key FROM backup")}
    objects = {o.key for o in await LocalObjectStore(tmp_path / "data" / "objects").list("backups")}
    assert keys <= objects
    backups_cut = [a for a in in_flight_at(answers, faulted, broken) if a.kind == "backup"]
    assert len(objects - keys) <= 2 * len(backups_cut)
    assert len(keys) >= 2 * (ok(answers, "backup") + 1)  # the first one, before the load

    # One line when the database went away and one when it came back; no traceback.
    log = server.entries()
    assert [e["msg"] for e in log if e.get("component") == "database"] == [
        "database unavailable",
        "database available again",
    ], log
    assert not [e for e in log if "exc" in e and e.get("logger", "").startswith("isp.")], log
