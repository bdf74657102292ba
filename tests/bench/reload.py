"""Benchmark: how long from saving a plugin file until HTTP answers with the new code.

Starts ``isp serve`` (Hypercorn, hot reload on) in a subprocess on SQLite, with a plugin
whose ``customer_created`` hook writes its generation and ``len(sys.modules)`` into the
new customer's address, so the JSON answer of ``POST /customers`` shows which code ran.
The script rewrites the hook N times (default 200); for each save it measures the time
until HTTP shows the new generation, while a second task sends requests continuously and
counts failures. Baseline, measured in the same run: the raw watchfiles event latency
(write -> event) with the reloader's own debounce settings.

    .venv/bin/python tests/bench/reload.py [--saves 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from watchfiles import awatch

from isp.plugins.reloader import DEBOUNCE_MS, STEP_MS, PluginFileFilter

HANDLERS = """
import sys
from isp.plugins import registry

GENERATION = {generation}

@registry.hook("customer_created")
async def stamp(customer, db):
    customer.address = f"gen-{{GENERATION}}|modules-{{len(sys.modules)}}"
    await customer.save(using_db=db, update_fields=["address"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def watchfiles_baseline(root: Path, samples: int) -> list[float]:
    """Write -> awatch event latency with the reloader's filter and debounce settings."""
    target = root / "baseline"
    target.mkdir()
    stop = asyncio.Event()
    events: asyncio.Queue[float] = asyncio.Queue()

    async def watch() -> None:
        async for _ in awatch(
            target,
            watch_filter=PluginFileFilter(),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
        ):
            events.put_nowait(time.perf_counter())

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    latencies = []
    for i in range(samples):
        started = time.perf_counter()
        (target / "handlers.py").write_text(f"GENERATION = {i}\n")
        latencies.append((await events.get()) - started)
        await asyncio.sleep(0.02)
    stop.set()
    await task
    return latencies


def prepare() -> tuple[Path, Path, dict[str, str], str]:
    """Plugin folder, settings and a token (blocking: done before the event loop runs)."""
    root = Path(tempfile.mkdtemp(prefix="isp-bench-reload-"))
    plugins = root / "plugins"
    plugin = plugins / "stamp"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("from isp.plugins import Plugin\n\nplugin = Plugin()\n")
    (plugin / "handlers.py").write_text(HANDLERS.format(generation=0))
    (plugin / "manifest.json").write_text(
        json.dumps(
            {
                "name": "stamp",
                "version": "1.0.0",
                "description": "bench",
                "hooks": ["customer_created"],
            }
        )
    )
    env = {
        **os.environ,
        "ISP_DATABASE_URL": f"sqlite://{root / 'isp.sqlite3'}",
        "ISP_DATA_DIR": str(root / "data"),
        "ISP_PLUGINS_DIR": str(plugins),
        "ISP_PLUGIN_RELOAD": "true",
        "ISP_LOG_LEVEL": "WARNING",
        "ISP_SECRET_KEY": "bench-secret-key-bench-secret-key-0123",
    }
    isp = [sys.executable, "-m", "isp"]
    subprocess.run(
        [*isp, "user", "add", "bench", "--role", "admin"], env=env, check=True, capture_output=True
    )
    issued = subprocess.run(
        [*isp, "token", "issue", "bench"], env=env, check=True, capture_output=True, text=True
    )
    return root, plugin, env, issued.stdout.strip().splitlines()[-1]


async def run(saves: int) -> None:
    root, plugin, env, token = prepare()
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isp",
        "serve",
        "--port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    requests = 0
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

            async def stamp() -> tuple[int, int]:
                nonlocal requests
                requests += 1
                response = await client.post("/customers", json={"name": "bench"})
                if response.status_code != 201:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    return -1, -1
                gen, modules = response.json()["address"].split("|")
                return int(gen.removeprefix("gen-")), int(modules.removeprefix("modules-"))

            _, modules_before = await stamp()
            rss_before = rss_mb(server.pid)
            stop = asyncio.Event()

            async def background() -> None:
                while not stop.is_set():
                    try:
                        await stamp()
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    await asyncio.sleep(0.002)

            load = asyncio.create_task(background())
            latencies: list[float] = []
            for generation in range(1, saves + 1):
                started = time.perf_counter()
                (plugin / "handlers.py").write_text(HANDLERS.format(generation=generation))
                while (await stamp())[0] != generation:
                    if time.perf_counter() - started > 10:
                        raise SystemExit(f"generation {generation} never served")
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.03)
            stop.set()
            await load
            _, modules_after = await stamp()
            rss_after = rss_mb(server.pid)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=10)
    baseline = await watchfiles_baseline(root, min(saves, 100))

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"{name:<34}{statistics.median(ms):>8.1f}{percentile(ms, 0.95):>8.1f}"
            f"{max(ms):>8.1f}{len(ms):>8d}"
        )

    print(f"{'latency (ms)':<34}{'p50':>8}{'p95':>8}{'max':>8}{'n':>8}")
    print(row("save -> new code over HTTP", latencies))
    print(row("baseline: save -> watchfiles event", baseline))
    print(f"requests sent during the run: {requests}, failed: {len(failures)}")
    for failure in failures[:5]:
        print("  failure:", failure)
    print(
        f"server RSS: {rss_before:.1f} MB before, {rss_after:.1f} MB after "
        f"({rss_after - rss_before:+.1f} MB)"
    )
    print(
        f"server sys.modules: {modules_before} before, {modules_after} after "
        f"({modules_after - modules_before:+d})"
    )
    print(f"goal p95 <= 150 ms: {'met' if percentile(latencies, 0.95) <= 0.150 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=200)
    asyncio.run(run(parser.parse_args().saves))


if __name__ == "__main__":
    main()
