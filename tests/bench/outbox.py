"""Benchmark: a hook after the commit (through the outbox) against the same hook inside
the workflow's transaction.

Run: ``.venv/bin/python tests/bench/outbox.py [--workflows N] [--postgres]``. In one
running app (SQLite, or with ``--postgres`` a throw-away PostgreSQL cluster, or
``ISP_TEST_POSTGRES_URL``) two plugins hook ``customer_created`` with the same body
(note the time it ran): ``inline`` in the transaction, ``after`` as an after-commit hook.
One of them is enabled at a time; ``create_customer`` runs N times with each, in
alternating blocks so drift hits both alike, one workflow after the other.

What is timed is what the caller waits for: the workflow function (``create_customer``
until it returns, so BEGIN, the INSERTs, the hook or the outbox row, and the COMMIT), and
the whole request (``POST /customers`` through the app: token check, validation,
workflow, answer). The hook's own cost is paid on both sides: inside the workflow for
``inline``; for ``after`` its delivery runs on the same event loop while the next
workflow runs (they follow each other with no pause), so whatever the delivery costs
the loop (the hook call, recording it delivered) lands in the measured latencies too.
Between blocks the bench waits, untimed, until every delivery is recorded, so no block
inherits the other's work.

It prints the workflows' p50 and p95 latency with each hook, the growth of the p50 (in
per cent and in microseconds: the per cent depends on how cheap the base workflow is),
and the p95 from the commit to the after-commit delivery, measured from the workflow's
return, a few microseconds after its COMMIT answered. The goals: p50 grows by at most
10 %, delivery p95 <= 50 ms.
"""

from __future__ import annotations

import sys
from os.path import dirname, realpath

# This folder holds http.py, which would shadow the standard library's http package.
if sys.path and realpath(sys.path[0]) == dirname(realpath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from isp.app import create_app  # noqa: E402
from isp.config import Settings  # noqa: E402
from tests.pgcluster import throwaway_postgres  # noqa: E402

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
BLOCK = 100

HANDLERS = """
import time

from isp.plugins import registry

SEEN = {{}}


@registry.{decorator}("customer_created")
async def seen(customer, {second}):
    SEEN[customer.id] = time.perf_counter()
"""


def write_plugin(plugins: Path, name: str, after_commit: bool) -> None:
    folder = plugins / name
    folder.mkdir(parents=True)
    hook: dict[str, Any] = {"name": "customer_created", "after_commit": after_commit}
    manifest = {"name": name, "version": "1.0.0", "description": name, "hooks": [hook]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "__init__.py").write_text("from isp.plugins import Plugin\n\nplugin = Plugin()\n")
    decorator, second = ("after_commit", "delivery") if after_commit else ("hook", "db")
    (folder / "handlers.py").write_text(HANDLERS.format(decorator=decorator, second=second))


@contextmanager
def postgres() -> Iterator[str]:
    configured = os.environ.get("ISP_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    with throwaway_postgres() as url:
        yield url


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100)[pct - 1]


async def run(database_url: str, root: Path, workflows: int) -> dict[str, list[float]]:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token
    from isp.core.schemas import CustomerIn
    from isp.core.workflows import create_customer
    from isp.plugins import outbox, registry
    from isp.plugins.models import OutboxRow

    plugins = root / "plugins"
    write_plugin(plugins, "inline", after_commit=False)
    write_plugin(plugins, "after", after_commit=True)
    settings = Settings(
        database_url=database_url, data_dir=root / "data", plugins_dir=plugins,
        plugin_reload=False, secret_key=SECRET,
    )  # fmt: skip
    app = create_app(settings)
    async with app.test_app():
        target = app.extensions["isp.plugins"].registry
        registry.bind(target)
        outbox.bind(app.extensions["isp.outbox"])
        seen = sys.modules["isp_plugins.after.handlers"].SEEN
        await add_user("bench", ["operator"])
        headers = {"Authorization": f"Bearer {await issue_token('bench', ['write'])}"}
        client = app.test_client()
        latency: dict[str, list[float]] = {
            f"{mode} {via}": [] for via in ("call", "http") for mode in ("inline", "after")
        }
        committed: dict[int, float] = {}

        async def one(via: str, name: str) -> tuple[int, float, float]:
            started = time.perf_counter()
            if via == "call":
                customer_id = (await create_customer(CustomerIn(name=name))).id
            else:
                response = await client.post("/customers", json={"name": name}, headers=headers)
                customer_id = (await response.get_json())["id"]
            return customer_id, started, time.perf_counter()

        async def drained() -> None:
            """Every after-commit delivery ran: disabling ``after`` now fails none."""
            deadline = time.monotonic() + 60
            while await OutboxRow.filter(status="pending").exists():
                if time.monotonic() > deadline:
                    raise SystemExit("after-commit deliveries still pending after 60 s")
                await asyncio.sleep(0.01)

        async def block(mode: str, via: str, count: int, record: bool) -> None:
            await drained()  # outside the timed calls
            target.set_enabled("inline", mode == "inline")
            target.set_enabled("after", mode == "after")
            for n in range(count):
                customer_id, started, done = await one(via, f"bench {mode} {n}")
                if record:
                    latency[f"{mode} {via}"].append((done - started) * 1000)
                    if mode == "after" and via == "call":
                        committed[customer_id] = done

        for via in ("call", "http"):
            for mode in ("inline", "after"):  # warm-up
                await block(mode, via, 50, record=False)
            while len(latency[f"after {via}"]) < workflows:
                count = min(BLOCK, workflows - len(latency[f"after {via}"]))
                await block("inline", via, count, record=True)
                await block("after", via, count, record=True)

        await drained()
        latency["delivery call"] = [(seen[i] - at) * 1000 for i, at in committed.items()]
    return latency


def report(label: str, found: dict[str, list[float]]) -> None:
    for via, title in (("call", "create_customer()"), ("http", "POST /customers")):
        inline, after = found[f"inline {via}"], found[f"after {via}"]
        delivery = found["delivery call"]
        growth = statistics.median(after) / statistics.median(inline) - 1
        print(f"{label}, {title}: {len(after):,} workflows each")
        for name, values in (("hook in the transaction", inline), ("after-commit hook", after)):
            print(
                f"  {name:24s} p50 {statistics.median(values):6.2f} ms  "
                f"p95 {percentile(values, 95):6.2f} ms"
            )
        extra = (statistics.median(after) - statistics.median(inline)) * 1000
        print(f"  p50 growth {growth * 100:+5.1f} %  ({extra:+.0f} us; goal <= +10 %)")
        if via == "call":  # over HTTP the delivery may finish before the answer is out
            print(
                f"  commit to delivery       p50 {statistics.median(delivery):6.2f} ms  "
                f"p95 {percentile(delivery, 95):6.2f} ms  (goal p95 <= 50 ms)"
            )


async def on_postgres(admin_url: str, root: Path, workflows: int) -> dict[str, list[float]]:
    name = f"isp_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        return await run(admin_url.rsplit("/", 1)[0] + f"/{name}", root, workflows)
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # per-call INFO logs would dominate what is timed
    root = Path(tempfile.mkdtemp(prefix="isp-bench-outbox-"))
    try:
        if args.postgres:
            with postgres() as url:
                found = asyncio.run(on_postgres(url, root, args.workflows))
            report("PostgreSQL", found)
        else:
            database = f"sqlite://{root / 'isp.sqlite3'}"
            report("SQLite", asyncio.run(run(database, root, args.workflows)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
