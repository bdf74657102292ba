"""The S3 server crashes (killed, back empty) or hangs (SIGSTOP) under load, during
uploads and backups.

Requests that need no object answer as usual; those that do answer within
``ISP_S3_TIMEOUT`` plus a second plus their own work (at most the longest healthy request of
their kind before the fault; see ``tests.faults.load.assert_honest``) with a 503 naming the
object store (a store that came
back without its buckets included), nothing is half-written, and the service is normal
again within 5 s of the store's return, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from isp.storage import S3ObjectStore
from tests.faults.conftest import (
    DEADLINE,
    MARGIN,
    RECOVERY,
    backup_ready_device,
    fault_env,
    rows,
    s3_env,
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
from tests.plugins.builders import plugin_files, zip_of
from tests.routeros import RouterOSServer
from tests.s3server import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3Process

BUCKETS = ("plugins", "backups")


async def create_customer(client: httpx.AsyncClient, ref: str) -> Answer:
    return await call(client, "customer", ref, client.post("/customers", json={"name": ref}))


async def readyz(client: httpx.AsyncClient, ref: str) -> Answer:
    return await call(client, "readyz", "", client.get("/readyz"))


async def upload(client: httpx.AsyncClient, ref: str) -> Answer:
    data = zip_of(ref, plugin_files(ref))
    files = {"file": ("plugin.zip", data, "application/zip")}
    return await call(client, "upload", ref, client.post("/plugins/upload", files=files))


def ok(answers: list[Answer], kind: str) -> int:
    return sum(1 for a in answers if a.kind == kind and 200 <= a.status < 300)


async def stored_keys(endpoint: str, bucket: str) -> set[str]:
    store = S3ObjectStore(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    try:
        return {item.key for item in await store.list(bucket)}
    finally:
        await store.close()


async def recreate_buckets(endpoint: str) -> None:
    """What an operator does for a store that came back empty."""
    store = S3ObjectStore(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    try:
        await store.ensure_buckets(*BUCKETS)
    finally:
        await store.close()


@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_object_store_outage_is_a_prompt_503_and_heals_without_restart(
    fault: str, s3_process: S3Process, tmp_path: Path
) -> None:
    env = fault_env(tmp_path, **s3_env(s3_process.url))
    headers = await token_for(env)
    async with RouterOSServer() as router, serving(env, tmp_path / "isp.log") as server:
        device_id = await backup_ready_device(server.url, headers, router)

        async def backup(client: httpx.AsyncClient, ref: str) -> Answer:
            return await call(client, "backup", ref, client.post(f"/devices/{device_id}/backup"))

        load = Load(
            server.url,
            headers,
            timeout=DEADLINE + 10,
            requests=[create_customer, create_customer, create_customer, readyz],
            flights=[upload, backup],
        )
        async with load:
            await load.answered(lambda a: ok(a, "upload") >= 2 and ok(a, "backup") >= 2, 60)
            faulted = time.monotonic()
            if fault == "hang":
                s3_process.pause()
            else:
                await asyncio.to_thread(s3_process.kill)
            broken = time.monotonic()
            await load.answered(
                lambda a: (
                    sum(1 for x in a if x.started > faulted and x.status == 503) >= 10
                    and any(x.kind == "upload" and x.status == 503 for x in a)
                    and any(x.kind == "backup" and x.status == 503 for x in a)
                ),
                30,
            )
            if fault == "hang":
                s3_process.resume()
            else:
                await asyncio.to_thread(s3_process.start)
                # back, but empty: its missing buckets are the server's problem (503)
                await load.answered(
                    lambda a: any("does not exist" in x.detail for x in load.since(faulted)), 30
                )
                await recreate_buckets(s3_process.url)
            back = time.monotonic()
            await load.answered(
                lambda a: (
                    len([x for x in a if x.started > back + RECOVERY]) >= 30
                    and ok(load.since(back + RECOVERY), "upload") >= 1
                ),
                30,
            )

    answers = load.answers
    assert 200 <= len(answers) <= 1000
    work = own_work(answers, faulted)
    print(f"\nobject_store {fault}:\n{summary(answers, DEADLINE + MARGIN, work)}")
    assert_honest(answers, "object_store", DEADLINE + MARGIN, work)
    assert_recovered(answers, back + RECOVERY)
    # what needs no object is not affected at all
    assert all(a.status == 201 for a in answers if a.kind == "customer")

    # Nothing half-written. The database is fine here, so its records are the truth:
    # a plugin is recorded exactly when its upload was answered 2xx, and a record
    # points to an object that exists (the objects written before a crash are lost
    # with the store; after it, nothing may be missing).
    uploaded = {a.ref for a in answers if a.kind == "upload" and 200 <= a.status < 300}
    database_url = env["ISP_DATABASE_URL"]
    recorded = {name for (name,) in await rows(database_url, "SELECT name FROM plugin_record")} - {
        "mikrotik"
    }
    assert recorded == uploaded
    objects = {key.split("/", 1)[0] for key in await stored_keys(s3_process.url, "plugins")}
    cut = {a.ref for a in in_flight_at(answers, faulted, broken) if a.kind == "upload"}
    if fault == "hang":
        assert recorded <= objects
        assert objects - recorded <= cut
    else:
        after = {a.ref for a in answers if a.kind == "upload" and a.started > back}
        assert recorded & after <= objects
        assert objects <= recorded
    keys = {key for (key,) in await rows(database_url, "SELECT object_key FROM backup")}
    backed_up = await stored_keys(s3_process.url, "backups")
    backups_cut = [a for a in in_flight_at(answers, faulted, broken) if a.kind == "backup"]
    if fault == "hang":
        assert keys <= backed_up
        assert len(backed_up - keys) <= 2 * len(backups_cut)
    else:
        assert backed_up <= keys
        assert len(backed_up) >= 2 * ok(load.since(back), "backup")

    # One line when the store went away and one when it came back (a store back without
    # its buckets is still down), never a line per request.
    log = server.entries()
    assert [e["msg"] for e in log if e.get("component") == "object_store"] == [
        "object_store unavailable",
        "object_store available again",
    ], log
    assert not [e for e in log if "exc" in e and e.get("logger", "").startswith("isp.")], log
