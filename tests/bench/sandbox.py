"""Benchmark: a no-op hook through ``SandboxedPlugin`` against the same hook in process.

Run: ``.venv/bin/python tests/bench/sandbox.py [--calls N] [--starts N]``. In one run it
writes a plugin with a no-op ``async def`` hook, loads it in process with the service's
loader and starts it in a bubblewrap worker, then interleaves batches of calls of both
(each under its timeout) so drift hits both alike. It prints:

- p50 and p95 microseconds per call of each, and the p50 overhead of the sandbox
  (target: at most 0.5 ms): ``SandboxedPlugin.call`` against the function, and
  ``registry.emit`` of the entries the runtime publishes for a sandboxed plugin
  (snapshot, key-value store, forwarder) against ``emit`` of the in-process entries;
- the worker's cold start, median of ``--starts`` starts (target: at most 300 ms);
- the worker's resident memory from /proc (target: at most 40 MB), the Python worker
  alone and with the sandbox's launcher processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import isp
from isp.config import Settings
from isp.plugins import sandboxed as sandboxed_plugin
from isp.plugins.discovery import describe
from isp.plugins.loader import detach, load
from isp.plugins.registry import PluginRegistry
from isp.plugins.sandbox import SandboxedPlugin, WorkerSpec

HANDLERS = """
from isp.plugins import registry

@registry.hook("customer_created")
async def noop(customer, db):
    return None
"""
INIT = "from isp.plugins import Plugin\n\nplugin = Plugin()\n"
TIMEOUT = 10.0
BATCH = 50


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(child) for child in children]
    return found + [grand for child in found for grand in descendants(child)]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(calls: int, starts: int) -> None:
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "benchnoop"
        folder.mkdir()
        manifest = {"name": "benchnoop", "version": "1.0.0", "description": "no-op hook",
                    "hooks": ["customer_created"]}  # fmt: skip
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "__init__.py").write_text(INIT)
        (folder / "handlers.py").write_text(HANDLERS)
        loaded = load(describe(folder), {"customer_created"})
        func = loaded.entries[0].func
        sandbox = SandboxedPlugin(WorkerSpec("benchnoop", folder))
        await sandbox.start()
        subject = {"id": 1, "name": "Ann", "email": "ann@example.net"}
        local, remote = PluginRegistry(), PluginRegistry()
        for registry in (local, remote):
            registry.declare_events(["customer_created"])
        local.publish("benchnoop", loaded.entries)
        published, worker = await sandboxed_plugin.start(
            describe(folder), {"customer_created"}, Settings(), remote
        )
        remote.publish("benchnoop", published.entries)

        async def emit_in_process() -> None:
            await local.emit("customer_created", subject, db=None)

        async def emit_sandbox() -> None:
            await remote.emit("customer_created", subject, db=None)

        async def in_process() -> None:
            await asyncio.wait_for(func(subject, db=None), TIMEOUT)

        async def sandboxed() -> None:
            await sandbox.call("handlers.noop", subject, timeout=TIMEOUT)

        cases = (("in_process", in_process), ("sandbox", sandboxed),
                 ("emit in_process", emit_in_process), ("emit sandbox", emit_sandbox))  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _, case in cases:  # warm up each
            for _ in range(BATCH):
                await case()
        for _ in range(max(1, calls // BATCH)):
            for name, case in cases:
                for _ in range(BATCH):
                    started = time.perf_counter()
                    await case()
                    samples[name].append(time.perf_counter() - started)

        assert sandbox.pid is not None
        processes = descendants(sandbox.pid)
        worker_kb = rss_kb(processes[-1])
        total_kb = sum(rss_kb(pid) for pid in [sandbox.pid, *processes])

        cold: list[float] = []
        for _ in range(starts):
            await sandbox.stop()
            await sandbox.start()
            assert sandbox.cold_start is not None
            cold.append(sandbox.cold_start)
        await sandbox.stop()
        await worker.stop()
        detach("benchnoop")

    for name, values in samples.items():
        p50, p95 = percentile(values, 0.5) * 1e6, percentile(values, 0.95) * 1e6
        print(f"{name:>15}: p50 {p50:8.1f} us   p95 {p95:8.1f} us   ({len(values)} calls)")
    overhead = (percentile(samples["sandbox"], 0.5) - percentile(samples["in_process"], 0.5)) * 1e3
    print(f"  overhead: p50 {overhead:.3f} ms per call (target <= 0.5 ms)")
    emitted = (percentile(samples["emit sandbox"], 0.5)
               - percentile(samples["emit in_process"], 0.5)) * 1e3  # fmt: skip
    print(f"  overhead through registry.emit: p50 {emitted:.3f} ms per call (target <= 0.5 ms)")
    print(f"cold start: median {statistics.median(cold) * 1e3:.0f} ms, min "
          f"{min(cold) * 1e3:.0f} ms of {len(cold)} starts (target <= 300 ms)")  # fmt: skip
    compiled = any((Path(isp.__file__).parent / "plugins" / "__pycache__").glob("*.pyc"))
    print(f"isp bytecode: {'present' if compiled else 'absent: the worker compiles isp on start'}")
    print(f"worker RSS: {worker_kb / 1024:.1f} MB python worker, {total_kb / 1024:.1f} MB "
          "with the bwrap processes (target <= 40 MB)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.starts)))
