"""Fleet jobs and schedules across real server processes (PostgreSQL, RouterOS double).

Each instance runs a job worker on the shared queue: a schedule starts one job per
period whichever instance sees the tick, a fleet job's chunks are shared, and the
chunks of an instance killed mid-job are picked up by the other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.core.cluster import Cluster
from tests.plugins.builders import until
from tests.routeros import RouterFleet, RouterOSServer

PERIOD = 2  # seconds between two scheduled jobs
PERIODS = 5


async def schedule_runs(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        return list(await conn.fetch("SELECT run_at, job_id FROM schedule_run ORDER BY run_at"))
    finally:
        await conn.close()


def assert_one_job_per_period(runs: list[Any], jobs: list[Any]) -> None:
    """Consecutive periods, each with its own job, and no job outside them."""
    times = [run["run_at"] for run in runs]
    assert all(
        b - a == timedelta(seconds=PERIOD) for a, b in zip(times, times[1:], strict=False)
    ), times
    job_ids = [run["job_id"] for run in runs]
    assert None not in job_ids
    assert sorted(map(str, job_ids)) == sorted(str(job) for job in jobs)


async def devices_backed_up(client: httpx.AsyncClient, url: str) -> float:
    """This instance's ``isp_backups_total{kind="device", outcome="ok"}``."""
    text = (await client.get(f"{url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "isp_backups_total" and sample.labels == {
                "kind": "device", "outcome": "ok"
            }:  # fmt: skip
                return sample.value
    return 0.0


async def test_a_schedule_starts_exactly_one_job_per_period_across_two_instances(
    shared_database: str,
    tmp_path: Path,
) -> None:
    every = f"*/{PERIOD} * * * * *"
    async with Cluster(tmp_path, shared_database, 2, ISP_BACKUP_SCHEDULE=every) as cluster:

        async def enough() -> bool:
            return len(await schedule_runs(shared_database)) >= PERIODS + 1

        await until(enough, within=PERIOD * (PERIODS + 6))
        async with httpx.AsyncClient(headers=cluster.headers, timeout=10) as client:
            seen = [(await client.get(f"{url}/schedules")).json() for url in cluster.urls]
        runs = await schedule_runs(shared_database)
        conn = await asyncpg.connect(shared_database.replace("postgres://", "postgresql://", 1))
        try:
            jobs = [
                row["id"]
                for row in await conn.fetch("SELECT id FROM job WHERE created_at <= $1",
                                            runs[-1]["run_at"] + timedelta(seconds=PERIOD))
            ]  # fmt: skip
        finally:
            await conn.close()
    assert_one_job_per_period(runs, jobs)
    for answer in seen:
        [schedule] = answer["schedules"]
        assert schedule["cron"] == every
        assert schedule["last_job_id"] is not None
        assert schedule["next_run_at"] > schedule["last_run_at"]


async def test_a_schedule_starts_one_job_per_period_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'isp.sqlite3'}"
    every = f"*/{PERIOD} * * * * *"
    async with Cluster(tmp_path, url, 1, ISP_BACKUP_SCHEDULE=every) as cluster, \
            httpx.AsyncClient(headers=cluster.headers, timeout=10) as client:  # fmt: skip
        first = (await client.get(f"{cluster.urls[0]}/schedules")).json()["schedules"][0]
        seen: list[str] = []

        async def next_period() -> bool:
            schedule = (await client.get(f"{cluster.urls[0]}/schedules")).json()["schedules"][0]
            if schedule["last_job_id"] and schedule["last_job_id"] not in seen:
                seen.append(schedule["last_job_id"])
            return len(seen) >= PERIODS + 1

        await until(next_period, within=PERIOD * (PERIODS + 6))
        jobs = [(await client.get(f"{cluster.urls[0]}/jobs/{job_id}")).json() for job_id in seen]
    assert first["cron"] == every
    assert len(set(seen)) == len(seen)
    assert all(job["status"] == "succeeded" and job["total"] == 0 for job in jobs)

    with sqlite3.connect(tmp_path / "isp.sqlite3") as db:
        runs = [
            {"run_at": _parse(r[0]), "job_id": r[1]}
            for r in db.execute("SELECT run_at, job_id FROM schedule_run ORDER BY run_at")
        ]
        job_rows = [r[0] for r in db.execute("SELECT id FROM job")]
    # periods may still be starting when the server stops; compare the complete ones
    assert_one_job_per_period(
        runs, job_rows[: len(runs)] if len(job_rows) > len(runs) else job_rows
    )


def _parse(value: str) -> Any:

    return datetime.fromisoformat(value)


async def add_routers(client: httpx.AsyncClient, url: str, fleet: RouterFleet) -> list[int]:
    async def add(i: int, router: RouterOSServer) -> int:
        body = {"name": f"r{i}", "vendor": "mikrotik", "host": router.host, "port": router.port,
                "username": "admin", "password": "secret"}  # fmt: skip
        response = await client.post(f"{url}/devices", json=body)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    ids: list[int] = []
    routers = list(enumerate(fleet))
    for start in range(0, len(routers), 20):
        ids += await asyncio.gather(*(add(i, r) for i, r in routers[start : start + 20]))
    await client.put(f"{url}/plugins/mikrotik/settings", json={"binary_backup": False})
    return ids


async def export_counts(database_url: str) -> dict[int, int]:
    conn = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        rows = await conn.fetch(
            "SELECT device_id, count(*) AS n FROM backup WHERE kind = 'export' GROUP BY device_id"
        )
        return {row["device_id"]: row["n"] for row in rows}
    finally:
        await conn.close()


def s3_env(endpoint: str) -> dict[str, str]:
    from tests.s3server import S3_ACCESS_KEY, S3_SECRET_KEY

    return {"ISP_S3_ENDPOINT_URL": endpoint, "ISP_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "ISP_S3_SECRET_KEY": S3_SECRET_KEY}  # fmt: skip


async def wait_job(client: httpx.AsyncClient, url: str, job_id: str, within: float) -> Any:
    job: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal job
        job = (await client.get(f"{url}/jobs/{job_id}")).json()
        return job["status"] not in ("queued", "running")

    await until(finished, within=within)
    return job


async def test_a_fleet_job_of_200_routers_is_shared_by_both_instances(
    shared_database: str,
    s3_reset: str,
    tmp_path: Path,
) -> None:
    async with RouterFleet(200) as fleet:
        for router in fleet:
            router.state.command_delay = 0.05
        async with Cluster(
            tmp_path, shared_database, 2, s3=s3_env(s3_reset), mikrotik=True,
            ISP_BACKUP_CHUNK_SIZE="10", ISP_BACKUP_CONCURRENCY="10",
        ) as cluster, httpx.AsyncClient(headers=cluster.headers, timeout=30) as client:  # fmt: skip
            first, second = cluster.urls
            ids = await add_routers(client, first, fleet)
            started = await client.post(f"{first}/backups/run", json={})
            assert started.status_code == 202, started.text
            job = await wait_job(client, second, started.json()["job_id"], within=240)
            shares = [await devices_backed_up(client, url) for url in cluster.urls]
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 200, 200, [])
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == 200
    assert await export_counts(shared_database) == dict.fromkeys(ids, 1)


async def test_an_instance_killed_mid_job_loses_nothing_and_records_nothing_twice(
    shared_database: str,
    s3_reset: str,
    tmp_path: Path,
) -> None:
    async with RouterFleet(200) as fleet:
        for router in fleet:
            router.state.command_delay = 0.1
        async with Cluster(
            tmp_path, shared_database, 2, s3=s3_env(s3_reset), mikrotik=True,
            ISP_BACKUP_CHUNK_SIZE="10", ISP_BACKUP_CONCURRENCY="10", ISP_JOB_STALLED_AFTER="3",
        ) as cluster, httpx.AsyncClient(headers=cluster.headers, timeout=30) as client:  # fmt: skip
            survivor, victim = cluster.urls
            ids = await add_routers(client, survivor, fleet)
            started = await client.post(f"{survivor}/backups/run", json={})
            job_id = started.json()["job_id"]

            async def victim_is_working() -> bool:
                done = (await client.get(f"{survivor}/jobs/{job_id}")).json()["done"]
                return await devices_backed_up(client, victim) > 0 and done >= 40

            await until(victim_is_working, within=120)
            before = (await client.get(f"{survivor}/jobs/{job_id}")).json()
            cluster.kill(1)
            job = await wait_job(client, survivor, job_id, within=240)
    assert before["done"] < 200, "the job finished before the kill: nothing was tested"
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 200, 200, [])
    assert await export_counts(shared_database) == dict.fromkeys(ids, 1)
