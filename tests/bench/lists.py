"""Benchmark: list pages and searches over 100,000 customers and 100,000 services.

Run: ``.venv/bin/python tests/bench/lists.py [--rows N] [--requests R]``. On SQLite and on
PostgreSQL (a throw-away cluster, or ``ISP_TEST_POSTGRES_URL``) it fills the database,
then times, through the app (the request's whole handling: guard, query, serialization)
and in the same run:

- ``GET /customers?limit=100&after=<random id>`` and ``GET /services?limit=100&after=…``;
- ``GET /services?status=active&limit=100&after=…`` (a filtered page);
- ``GET /customers?q=<a name fragment>&limit=100`` (a search);
- ``GET /healthz`` as the baseline of the app's own overhead.

It prints p50/p95 in milliseconds; the goals are a page p95 <= 20 ms and a search p95
<= 100 ms.
"""

from __future__ import annotations

import sys
from os.path import dirname, realpath

# This folder holds http.py, which would shadow the standard library's http package.
if sys.path and realpath(sys.path[0]) == dirname(realpath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from isp.app import create_app  # noqa: E402
from isp.config import Settings  # noqa: E402
from tests.pgcluster import throwaway_postgres  # noqa: E402

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
BATCH = 2_000


@contextmanager
def postgres() -> Iterator[str]:
    configured = os.environ.get("ISP_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    with throwaway_postgres() as url:
        yield url


async def fill(rows: int) -> None:
    from isp.core.models import Customer, Device, Plan, Service, ServiceStatus, Vendor

    plan = await Plan.create(name="bench-50", download_mbps=50, upload_mbps=10)
    device = await Device.create(
        name="bench-router", vendor=Vendor.MIKROTIK, host="192.0.2.1", username="admin",
        password_enc="x",
    )  # fmt: skip
    statuses = list(ServiceStatus)
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)
        await Customer.bulk_create(
            [
                Customer(name=f"Customer {start + i} {uuid.uuid4().hex[:6]}",
                         email=f"c{start + i}@example.net", phone=f"+1 555 {start + i:07d}")
                for i in range(count)
            ]
        )  # fmt: skip
    first = (await Customer.all().order_by("id").first()).id  # type: ignore[union-attr]
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)
        await Service.bulk_create(
            [
                Service(customer_id=first + start + i, plan_id=plan.id, device_id=device.id,
                        username=f"sub{start + i}", password_enc="x",
                        status=statuses[(start + i) % len(statuses)])
                for i in range(count)
            ]
        )  # fmt: skip


async def timed(client: object, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = await client.get(path, headers=headers)  # type: ignore[attr-defined]
    await response.get_data()
    took = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{path}: {response.status_code} {await response.get_data(as_text=True)}")
    return took * 1000


def summary(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values):6.2f} ms  p95 {cuts[18]:6.2f} ms"


async def run(database_url: str, root: Path, rows: int, requests: int) -> dict[str, list[float]]:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    (root / "plugins").mkdir(parents=True, exist_ok=True)
    settings = Settings(
        database_url=database_url, data_dir=root / "data", plugins_dir=root / "plugins",
        plugin_reload=False, secret_key=SECRET,
    )  # fmt: skip
    app = create_app(settings)
    async with app.test_app():
        started = time.perf_counter()
        await fill(rows)
        print(f"  filled {rows:,} customers and {rows:,} services in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        await add_user("bench", ["admin"])
        headers = {"Authorization": f"Bearer {await issue_token('bench', ['read'])}"}
        client = app.test_client()
        rng = random.Random(1)
        cases = {
            "healthz (baseline)": lambda: "/healthz",
            "customers page of 100": lambda: f"/customers?limit=100&after={rng.randint(1, rows)}",
            "services page of 100": lambda: f"/services?limit=100&after={rng.randint(1, rows)}",
            "services ?status= page": lambda: (
                f"/services?status=active&limit=100&after={rng.randint(1, rows)}"
            ),
            "customers ?q= search": lambda: (
                f"/customers?q=Customer%20{rng.randint(1, rows)}%20&limit=100"
            ),
            "customers ?q= no match": lambda: f"/customers?q=zz{rng.randint(1, 999)}q&limit=100",
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(20):  # warm-up
            for make in cases.values():
                await timed(client, make(), headers)
        for _ in range(requests):
            for name, make in cases.items():  # interleaved, so drift hits all alike
                results[name].append(await timed(client, make(), headers))
    return results


async def main_async(rows: int, requests: int) -> None:
    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="isp-bench-lists-"))
    try:
        print("SQLite")
        for name, values in (await run(f"sqlite://{root / 'db.sqlite3'}", root, rows,
                                       requests)).items():  # fmt: skip
            print(f"  {name:<24} {summary(values)}")
        with postgres() as admin_url:
            name_ = f"isp_bench_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f'CREATE DATABASE "{name_}"')
            await admin.close()
            url = admin_url.rsplit("/", 1)[0] + f"/{name_}"
            print("PostgreSQL")
            for name, values in (await run(url, root / "pg", rows, requests)).items():
                print(f"  {name:<24} {summary(values)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("goals: a page of 100 p95 <= 20 ms, a ?q= search p95 <= 100 ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main_async(args.rows, args.requests))


if __name__ == "__main__":
    main()
