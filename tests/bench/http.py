"""Benchmark: an authenticated ``GET /customers/{id}`` against a Quart hello-world.

Run: ``.venv/bin/python tests/bench/http.py [--seconds N] [--connections C]``. Both run on
Hypercorn, one worker each, started here as separate processes; ``wrk`` (Debian's
package) loads each in turn with 20 connections, alternating for several rounds
(``--rounds``, 3 by default) so drift hits both alike; each figure is the median. The
service runs on SQLite (``--postgres``: also on a throw-away PostgreSQL cluster, or
``ISP_TEST_POSTGRES_URL``) with a token issued by ``isp token issue``. It prints
requests per second of each and the ratio; the goal is at least 0.6x.
"""

from __future__ import annotations

import sys
from os.path import dirname, realpath

# This folder holds http.py, which would shadow the standard library's http package.
if sys.path and realpath(sys.path[0]) == dirname(realpath(__file__)):
    sys.path[0] = dirname(dirname(dirname(realpath(__file__))))  # the repository

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

HELLO = """
from quart import Quart

app = Quart("hello")


@app.get("/")
async def hello():
    return {"hello": "world"}
"""
SECRET = "bench-secret-key-that-is-long-enough-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, seconds: int, connections: int, token: str | None) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk (make bench does it)")
    print("SQLite")
    measure(args, None)
    if args.postgres:
        import asyncio
        import uuid

        import asyncpg

        from tests.pgcluster import throwaway_postgres

        async def create(admin_url: str) -> str:
            name = f"isp_bench_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f'CREATE DATABASE "{name}"')
            await admin.close()
            return admin_url.rsplit("/", 1)[0] + f"/{name}"

        configured = os.environ.get("ISP_TEST_POSTGRES_URL")
        print("PostgreSQL")
        if configured:
            measure(args, asyncio.run(create(configured)))
        else:
            with throwaway_postgres() as url:
                measure(args, asyncio.run(create(url)))


def measure(args: argparse.Namespace, database_url: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="isp-bench-http-"))
    (root / "plugins").mkdir()
    (root / "hello_app.py").write_text(HELLO)
    env = {
        **os.environ,
        "ISP_DATABASE_URL": database_url or f"sqlite://{root / 'isp.sqlite3'}",
        "ISP_DATA_DIR": str(root / "data"),
        "ISP_PLUGINS_DIR": str(root / "plugins"),
        "ISP_SECRET_KEY": SECRET,
        "ISP_PLUGIN_RELOAD": "false",
        "ISP_LOG_LEVEL": "ERROR",
    }
    isp = [sys.executable, "-m", "isp"]
    subprocess.run([*isp, "user", "add", "bench", "--role", "admin"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    issued = subprocess.run([*isp, "token", "issue", "bench"], env=env, check=True,
                            capture_output=True, text=True)  # fmt: skip
    token = issued.stdout.strip().splitlines()[-1]
    service_port, hello_port = free_port(), free_port()
    processes = [
        subprocess.Popen(
            [*isp, "serve", "--port", str(service_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),  # fmt: skip
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--workers",
                "1",
                "--bind",
                f"127.0.0.1:{hello_port}",
                "hello_app:app",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),  # fmt: skip
    ]
    try:
        service = f"http://127.0.0.1:{service_port}"
        hello = f"http://127.0.0.1:{hello_port}/"
        headers = {"Authorization": f"Bearer {token}"}
        wait_up(f"{service}/readyz")
        wait_up(hello)
        created = httpx.post(f"{service}/customers", json={"name": "Ada"}, headers=headers)
        customer = f"{service}/customers/{created.json()['id']}"
        wait_up(customer, headers)
        wrk(hello, 2, args.connections, None)  # warm-up
        wrk(customer, 2, args.connections, token)
        rounds: dict[str, list[float]] = {"hello": [], "customer": [], "healthz": []}
        for _ in range(args.rounds):
            rounds["hello"].append(wrk(hello, args.seconds, args.connections, None))
            rounds["customer"].append(wrk(customer, args.seconds, args.connections, token))
            rounds["healthz"].append(
                wrk(f"{service}/healthz", args.seconds, args.connections, None)
            )
        hello_rps = statistics.median(rounds["hello"])
        customer_rps = statistics.median(rounds["customer"])
        print(
            f"wrk, {args.connections} connections, {args.seconds} s x {args.rounds} rounds each "
            "(median)"
        )
        print(f"Quart hello-world          {hello_rps:9.0f} req/s  {rounds['hello']}")
        print(f"GET /customers/{{id}} (auth) {customer_rps:9.0f} req/s  {rounds['customer']}")
        healthz_rps = statistics.median(rounds["healthz"])
        print(f"GET /healthz (no auth, no DB) {healthz_rps:7.0f} req/s  {rounds['healthz']}")
        print(f"ratio {customer_rps / hello_rps:.2f}x (goal >= 0.60x); /healthz "
              f"{healthz_rps / hello_rps:.2f}x")  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
