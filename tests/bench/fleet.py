"""Benchmark: backing up a fleet of emulated routers, the plugin against plain asyncssh.

Run: ``.venv/bin/python tests/bench/fleet.py [--routers N] [--concurrency C] [--rounds R]``.

``N`` RouterOS 7.17 routers are emulated (``RouterFleet``), then backed up

- ``plugin``: the real path. An SQLite database and local object store in a temporary
  directory, the mikrotik plugin loaded by ``PluginRuntime`` into the application's
  registry, a fleet job (``FleetJobs`` on the job queue) running ``back_up_device`` for
  every device (the
  ``device_backup`` hook: ``/export show-sensitive`` with its end marker on the same
  channel and every check, ``backup save`` with the file listed by its unique name on the
  same channel, SFTP stat and read with the size and header-length checks, ``file
  remove`` checked by a count), and the core sealing both artifacts (AES-GCM at rest)
  and recording ``Backup`` rows;
- ``baseline``: a plain asyncssh loop with the same concurrency doing the same commands
  (``/export``, ``/system backup save``, SFTP read, ``/file remove``) and nothing else
  (no checks, no host key, no database, no storage).

Rounds alternate (baseline, plugin, baseline, ...) so drift hits both. It prints each
run's time and routers per second, and the plugin/baseline throughput ratio; the targets
are a ratio >= 0.7 and 1,000 routers in under 60 s on a 2-core machine, emulator included.
Host keys are pinned beforehand (the steady state); ``--tofu`` starts unpinned.

``--instances 2`` (PostgreSQL): real routers are slow, so a fleet job is bound by the
routers in flight, not by this machine's cores. The routers answer every command after
``--delay`` seconds (default 0.5); the same job (``POST /backups/run``) runs on one
``isp serve`` process, then on two sharing the queue, each with
``ISP_BACKUP_CONCURRENCY=--concurrency`` (default 20 here); rounds alternate. Target:
two instances take at most 0.6x the time of one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from anywhere: a script

import asyncssh  # noqa: E402
from tortoise.connection import get_connection  # noqa: E402

from isp import db  # noqa: E402
from isp.config import Settings  # noqa: E402
from isp.core.events import CORE_EVENTS, DEVICE_BACKUP  # noqa: E402
from isp.core.jobs import FleetJobs  # noqa: E402
from isp.core.models import Backup, Device, JobStatus, Vendor  # noqa: E402
from isp.crypto import install_box, load_secret_box  # noqa: E402
from isp.plugins import registry  # noqa: E402
from isp.plugins.runtime import PluginRuntime  # noqa: E402
from isp.queue import TaskQueue  # noqa: E402
from isp.storage import create_object_store  # noqa: E402
from tests.pgcluster import throwaway_postgres  # noqa: E402
from tests.routeros import RouterFleet, RouterState  # noqa: E402

PASSWORD = "secret"
BUCKET = "backups"
HOST = "127.0.0.1"


class Fleet:
    """The emulated routers: ports, their shared host key, and what is left on their flash.

    In this process (``RouterFleet`` on this event loop), or in a child process, where
    the routers do not share this process's GIL and loop (as real, remote routers).
    """

    def __init__(self, count: int, *, separate: bool, delay: float = 0.0) -> None:
        self.count = count
        self.separate = separate
        self.delay = delay
        self.ports: list[int] = []
        self.host_key = ""
        self._local: RouterFleet | None = None
        self._pipe: Any = None
        self._process: Any = None

    async def __aenter__(self) -> Fleet:
        if self.separate:
            context = multiprocessing.get_context("spawn")
            self._pipe, child = context.Pipe()
            self._process = context.Process(
                target=serve_fleet, args=(self.count, child, self.delay)
            )
            self._process.start()
            self.ports, self.host_key = await asyncio.to_thread(self._pipe.recv)
        else:
            self._local = RouterFleet(self.count, state_factory=router_state)
            await self._local.start()
            self.ports = [router.port for router in self._local]
            self.host_key = self._local[0].host_key.export_public_key().decode().strip()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._local is not None:
            await self._local.stop()
        if self._process is not None:
            self._pipe.send("stop")
            await asyncio.to_thread(self._process.join)

    async def leftovers(self) -> int:
        """How many files (``.backup`` left behind) the routers hold."""
        if self._local is not None:
            return sum(len(router.state.files) for router in self._local)
        self._pipe.send("files")
        return int(await asyncio.to_thread(self._pipe.recv))


def router_state(index: int, delay: float = 0.0) -> RouterState:
    """A current RouterOS 7 router (two-line backup save output), ``delay`` s per command."""
    return RouterState(identity=f"router-{index}", version="7.17.2", command_delay=delay)


def serve_fleet(count: int, pipe: Any, delay: float = 0.0) -> None:
    """Child process: run ``count`` routers until told to stop."""

    async def serve() -> None:
        factory = functools.partial(router_state, delay=delay)
        async with RouterFleet(count, state_factory=factory) as fleet:
            key = fleet[0].host_key.export_public_key().decode().strip()
            pipe.send(([router.port for router in fleet], key))
            while (command := await asyncio.to_thread(pipe.recv)) != "stop":
                if command == "files":
                    pipe.send(sum(len(router.state.files) for router in fleet))

    asyncio.run(serve())


async def baseline_one(port: int, index: int) -> None:
    """What a minimal script would do: the same four operations, no checks."""
    async with asyncssh.connect(
        HOST,
        port,
        username="admin+ct",
        password=PASSWORD,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
    ) as conn:
        export = await conn.run("/export", check=False)
        assert export.stdout, "empty export"
        name = f"base-{index}-{time.monotonic_ns()}"
        await conn.run(f"/system backup save name={name} dont-encrypt=yes", check=False)
        async with conn.start_sftp_client() as sftp, sftp.open(f"{name}.backup", "rb") as remote:
            data = await remote.read()
        assert data, "empty backup"
        await conn.run(f"/file remove {name}.backup", check=False)


async def pool(items: list[Any], concurrency: int, work: Callable[[Any], Awaitable[None]]) -> None:
    """A fixed pool of workers pulling from a queue, as a fleet job's slots do."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(items))):
            group.create_task(worker())


async def run_baseline(fleet: Fleet, concurrency: int) -> float:
    start = time.perf_counter()
    await pool(
        list(enumerate(fleet.ports)), concurrency, lambda pair: baseline_one(pair[1], pair[0])
    )
    return time.perf_counter() - start


async def run_hook(devices: list[Device], concurrency: int) -> float:
    """The plugin alone: its ``device_backup`` hook through ``registry.emit``, no storage."""

    async def one(device: Device) -> None:
        results = await registry.emit(DEVICE_BACKUP, device, db=get_connection("default"))
        if [artifact["kind"] for artifact in results[0].value] != ["export", "binary"]:
            raise SystemExit(f"unexpected artifacts from device {device.id}")

    start = time.perf_counter()
    await pool(devices, concurrency, one)
    return time.perf_counter() - start


async def run_job(jobs: FleetJobs) -> float:
    """The fleet job exactly as ``POST /backups/run`` starts it: chunks on the job queue."""
    start = time.perf_counter()
    job = await jobs.start(None)
    job = await jobs.wait(job.id, poll=0.02)
    elapsed = time.perf_counter() - start
    if job.status is not JobStatus.SUCCEEDED or job.failed:
        raise SystemExit(f"plugin job failed: {job.status} {job.failed[:3]}")
    return elapsed


SECRET = "bench-secret-key-that-is-long-enough-0123456789"


def bench_settings(tmp: Path, database_url: str | None, **values: Any) -> Settings:
    return Settings(
        database_url=database_url or f"sqlite://{tmp / 'isp.sqlite3'}",
        data_dir=tmp / "data",
        plugins_dir=tmp / "plugins",
        plugin_reload=False,
        secret_key=SECRET,  # type: ignore[arg-type]
        **values,
    )


async def setup_app(
    tmp: Path, fleet: Fleet, *, tofu: bool, database_url: str | None
) -> tuple[Any, PluginRuntime]:
    plugins_dir = tmp / "plugins"
    shutil.copytree(ROOT / "plugins" / "mikrotik", plugins_dir / "mikrotik")
    settings = bench_settings(tmp, database_url)
    await db.init_db(settings)
    await db.migrate()
    box = await asyncio.to_thread(load_secret_box, settings)
    install_box(box)
    store = create_object_store(settings)
    await store.ensure_buckets(BUCKET)
    registry.declare_events(CORE_EVENTS)
    runtime = PluginRuntime(settings, registry)
    await runtime.start()
    if runtime.describe("mikrotik")["status"] != "active":
        raise SystemExit(f"plugin not loaded: {runtime.describe('mikrotik')}")
    pinned = None if tofu else fleet.host_key
    await Device.bulk_create(
        [
            Device(
                name=f"router-{i}",
                vendor=Vendor.MIKROTIK,
                host=HOST,
                port=port,
                username="admin",
                password_enc=box.encrypt(PASSWORD),
                host_key=pinned,
            )
            for i, port in enumerate(fleet.ports)
        ]
    )
    return store, runtime


def report(name: str, times: list[float], routers: int) -> float:
    best = min(times)
    rate = routers / statistics.median(times)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(
        f"{name:>8}: {shown} s  (median {statistics.median(times):.2f} s, best {best:.2f} s)"
        f"  {rate:7.1f} routers/s"
    )
    return rate


async def main(
    routers: int,
    concurrency: int,
    rounds: int,
    tofu: bool,
    database_url: str | None,
    separate: bool,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    where = "PostgreSQL" if database_url else "SQLite"
    emulator = "in a child process" if separate else "in this process"
    print(
        f"{routers} routers, concurrency {concurrency}, {rounds} round(s), {where}, "
        f"emulator {emulator}"
    )
    with tempfile.TemporaryDirectory(prefix="isp-bench-") as tmp:
        async with Fleet(routers, separate=separate) as fleet:
            store, runtime = await setup_app(Path(tmp), fleet, tofu=tofu, database_url=database_url)
            settings = bench_settings(
                Path(tmp), database_url, backup_concurrency=concurrency,
                backup_chunk_size=max(1, concurrency // 2),
            )  # fmt: skip
            queue = TaskQueue(settings)
            jobs = FleetJobs(settings, store, queue)
            await queue.start()
            try:
                warm = list(enumerate(fleet.ports))[:5]
                await pool(warm, 5, lambda pair: baseline_one(pair[1], pair[0]))
                devices = await Device.all().order_by("id")
                times: dict[str, list[float]] = {"baseline": [], "hook": [], "job": []}
                for _ in range(rounds):
                    gc.collect()
                    times["baseline"].append(await run_baseline(fleet, concurrency))
                    gc.collect()
                    times["hook"].append(await run_hook(devices, concurrency))
                    gc.collect()
                    times["job"].append(await run_job(jobs))
                stored = await Backup.all().count()
                leftovers = await fleet.leftovers()
                print(
                    f"stored {stored} backups ({2 * routers * rounds} expected), "
                    f"{leftovers} .backup files left on routers"
                )
                rates = {name: report(name, values, routers) for name, values in times.items()}
                for name in ("hook", "job"):
                    print(
                        f"    ratio {name}/baseline throughput = "
                        f"{rates[name] / rates['baseline']:.2f}x (target >= 0.70)"
                    )
            finally:
                await queue.stop()
                await runtime.stop()
                await store.close()
                await db.close_db()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, within: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


async def run_on_instances(env: dict[str, str], count: int, token: str, routers: int) -> float:
    """Start ``count`` servers, run one fleet job through the first, time it, stop them."""
    import httpx

    ports = [free_port() for _ in range(count)]
    servers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "isp",
            "serve",
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for port in ports
    ]
    urls = [f"http://{HOST}:{port}" for port in ports]
    try:
        for url in urls:
            await wait_ready(url)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            start = time.perf_counter()
            job_id = (await client.post(f"{urls[0]}/backups/run", json={})).json()["job_id"]
            while True:
                job = (await client.get(f"{urls[0]}/jobs/{job_id}")).json()
                if job["status"] not in ("queued", "running"):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
        if job["status"] != "succeeded" or job["failed"] or job["done"] != routers:
            raise SystemExit(f"job on {count} instance(s) failed: {job}")
        return elapsed
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            await server.wait()


async def main_instances(
    routers: int, concurrency: int, rounds: int, delay: float, database_url: str
) -> None:
    """One instance against two on the same fleet and database, rounds alternating."""
    logging.basicConfig(level=logging.WARNING)
    chunk = max(1, concurrency // 2)
    print(
        f"{routers} routers answering each command after {delay:g} s, "
        f"ISP_BACKUP_CONCURRENCY={concurrency}, ISP_BACKUP_CHUNK_SIZE={chunk}, "
        f"{rounds} round(s), PostgreSQL, isp serve processes"
    )
    with tempfile.TemporaryDirectory(prefix="isp-bench-") as tmp:
        async with Fleet(routers, separate=True, delay=delay) as fleet:
            store, runtime = await setup_app(
                Path(tmp), fleet, tofu=False, database_url=database_url
            )
            await runtime.stop()
            await store.close()
            await db.close_db()
            env = {
                **os.environ,
                "ISP_DATABASE_URL": database_url,
                "ISP_DATA_DIR": str(Path(tmp) / "data"),
                "ISP_PLUGINS_DIR": str(Path(tmp) / "plugins"),
                "ISP_PLUGIN_RELOAD": "false",
                "ISP_SECRET_KEY": SECRET,
                "ISP_LOG_LEVEL": "WARNING",
                "ISP_BACKUP_CONCURRENCY": str(concurrency),
                "ISP_BACKUP_CHUNK_SIZE": str(chunk),
            }
            isp = [sys.executable, "-m", "isp"]
            await asyncio.to_thread(
                subprocess.run, [*isp, "user", "add", "bench", "--role", "admin"], env=env,
                check=True, capture_output=True,
            )  # fmt: skip
            issued = await asyncio.to_thread(
                subprocess.run, [*isp, "token", "issue", "bench"], env=env, check=True,
                capture_output=True, text=True,
            )  # fmt: skip
            token = issued.stdout.split()[-1]
            times: dict[str, list[float]] = {"1 instance": [], "2 instances": []}
            for _ in range(rounds):
                times["1 instance"].append(await run_on_instances(env, 1, token, routers))
                times["2 instances"].append(await run_on_instances(env, 2, token, routers))
            one = statistics.median(times["1 instance"])
            two = statistics.median(times["2 instances"])
            for name, values in times.items():
                report(name, values, routers)
            print(f"    ratio 2 instances / 1 instance time = {two / one:.2f}x (target <= 0.60)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tofu", action="store_true", help="start with no host key pinned")
    parser.add_argument(
        "--postgres", action="store_true", help="a throw-away PostgreSQL cluster, not SQLite"
    )
    parser.add_argument(
        "--emulator",
        choices=("process", "inline"),
        default="process",
        help="routers in a child process (default) or on this process's event loop",
    )
    parser.add_argument(
        "--instances", type=int, choices=(1, 2), default=1,
        help="2: one isp serve process against two on PostgreSQL, with slow routers",
    )  # fmt: skip
    parser.add_argument("--delay", type=float, default=0.5, help="--instances 2: s per command")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.instances == 2:
            url = stack.enter_context(throwaway_postgres())
            concurrency = 20 if "--concurrency" not in sys.argv else args.concurrency
            asyncio.run(main_instances(args.routers, concurrency, args.rounds, args.delay, url))
        else:
            url = stack.enter_context(throwaway_postgres()) if args.postgres else None
            separate = args.emulator == "process"
            asyncio.run(main(args.routers, args.concurrency, args.rounds, args.tofu, url, separate))
