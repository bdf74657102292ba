"""Unsigned uploads run in the sandbox: hostile plugins contained, over HTTP, real workers.

Each hostile plugin hooks ``customer_created`` and attacks only for a customer named
``attack``, so the same plugin then shows that the service (and the plugin's next worker)
keeps serving. ``bystander``, another sandboxed plugin on the same event, counts the
customers it saw in its key-value store: it must be unaffected by its neighbour.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.app import create_app
from isp.config import Settings
from isp.plugins.models import PluginValue
from isp.plugins.runtime import PluginRuntime
from isp.plugins.sandbox import SandboxedPlugin
from tests.conftest import Tokens, auth, make_settings
from tests.plugins.builders import (
    Server,
    admin_token,
    eventually,
    plugin_files,
    server_env,
    upload,
    write_plugin,
    zip_of,
)

TIMEOUT = 1  # seconds: every hostile hook's timeout

BYSTANDER = """
from isp.plugins import registry

@registry.hook("customer_created")
async def count(customer, db):
    await db.put("seen", (await db.get("seen", 0)) + 1)
"""

PROBE = """
import asyncio, ctypes, os, socket, sys, time
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
{kind}def probe(customer, db):
    if customer.name != "attack":
        return
{body}
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        plugin_unsigned="sandbox",
        sandbox_memory_mb=512,
        sandbox_processes=16,
        sandbox_cpu_seconds=60,
        sandbox_limits={"limited": {"memory_mb": 256, "files": 64}},  # the operator's, one plugin
    )


@pytest.fixture
def runtime(app: Quart) -> PluginRuntime:
    found: PluginRuntime = app.extensions["isp.plugins"]
    return found


def hostile(body: str, *, sync: bool = True, name: str = "hostile", **manifest: Any) -> bytes:
    handlers = PROBE.format(kind="" if sync else "async ", body=textwrap.indent(body, "    "))
    hooks = [{"name": "customer_created", "timeout": TIMEOUT}]
    return zip_of(name, plugin_files(name, handlers=handlers, hooks=hooks, **manifest))


async def install(client: Client, tokens: Tokens, data: bytes, query: str = "") -> Any:
    response = await upload(client, tokens.admin, data, query)
    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    assert (body["isolation"], body["status"]) == ("sandbox", "active"), body
    return body


async def create(client: Client, tokens: Tokens, name: str) -> tuple[int, Any]:
    response = await client.post("/customers", json={"name": name}, headers=auth(tokens.operator))
    return response.status_code, await response.get_json()


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        found.add(current)
        pending.extend(children.get(current, []))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie counts as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def worker_of(runtime: PluginRuntime, name: str = "hostile") -> SandboxedPlugin:
    worker = runtime.worker(name)
    assert worker is not None
    assert worker.pid is not None
    return worker


def worker_pids(runtime: PluginRuntime, name: str = "hostile") -> set[int]:
    """The plugin's worker and everything running below it now."""
    return descendants(worker_of(runtime, name).pid or 0)


async def gone(pids: set[int]) -> None:
    await eventually(lambda: not alive(pids), within=10)


@pytest.fixture
async def bystander(client: Client, tokens: Tokens) -> None:
    await install(client, tokens, zip_of("bystander", plugin_files(
        "bystander", handlers=BYSTANDER, hooks=["customer_created"])))  # fmt: skip


async def seen() -> Any:
    row = await PluginValue.get_or_none(plugin="bystander", key="seen")
    return row.value if row else None


async def still_serving(client: Client, tokens: Tokens, runtime: PluginRuntime) -> None:
    """The service answers, the hostile plugin's (next) worker serves, bystander counts."""
    before = await seen() or 0
    assert (await create(client, tokens, "peace"))[0] == 201
    assert await seen() == before + 1
    assert (await client.get("/healthz")).status_code == 200


async def uninstall_leaves_nothing(
    client: Client, tokens: Tokens, runtime: PluginRuntime, pids: set[int]
) -> None:
    response = await client.delete("/plugins/hostile", headers=auth(tokens.admin))
    assert response.status_code == 204
    await gone(pids)
    # no thread of the plugin's here (a sandboxed hook never runs in a thread of ours)
    assert not [t.name for t in threading.enumerate() if "hostile" in t.name]


# --- containment -----------------------------------------------------------------------


async def test_a_sandboxed_plugin_cannot_read_the_secret_key_or_the_sqlite_file(
    client: Client, tokens: Tokens, runtime: PluginRuntime, settings: Settings, bystander: None,
    tmp_path: Path,
) -> None:  # fmt: skip
    secret = settings.data_dir / "secret.key"
    secret.write_text("TOP-SECRET-KEY\n")
    database = tmp_path / "isp.sqlite3"  # the service's SQLite database (on SQLite)
    targets = [str(secret), str(database), str(settings.data_dir)]
    await install(client, tokens, hostile(f"""
found = []
for path in {targets!r}:
    try:
        found.append(open(path).read() if not path.endswith("data") else os.listdir(path))
    except OSError as exc:
        found.append(type(exc).__name__)
raise PluginError(repr(found), status=418)
"""))  # fmt: skip
    pids = worker_pids(runtime)

    status, problem = await create(client, tokens, "attack")

    assert status == 418, problem
    assert problem["detail"] == repr(["FileNotFoundError"] * 3)
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


async def test_a_sandboxed_plugin_cannot_write_outside_its_sandbox(
    client: Client, tokens: Tokens, runtime: PluginRuntime, settings: Settings, bystander: None,
    tmp_path: Path,
) -> None:  # fmt: skip
    own = settings.plugins_dir / "hostile"
    targets = [str(own / "planted.py"), str(tmp_path / "escaped.txt"),
               str(settings.data_dir / "escaped.txt"), "/usr/escaped.txt"]  # fmt: skip
    await install(client, tokens, hostile(f"""
outcomes = []
for path in {targets!r}:
    try:
        with open(path, "w") as out:
            out.write("escaped")
        outcomes.append("written in the sandbox")
    except OSError as exc:
        outcomes.append(type(exc).__name__)
raise PluginError(repr(outcomes), status=418)
"""))  # fmt: skip
    pids = worker_pids(runtime)

    status, problem = await create(client, tokens, "attack")

    assert status == 418, problem
    outcomes = json.loads(problem["detail"].replace("'", '"'))
    assert outcomes[0] == "OSError" or outcomes[0].endswith("Error")  # its folder: read-only
    assert outcomes[3].endswith("Error")  # the system: read-only
    escaped = [path for path in targets if await asyncio.to_thread(Path(path).exists)]
    assert escaped == []  # whatever it wrote stayed in its private tmpfs
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sandboxed_plugin_cannot_connect_to_the_service_or_another_local_port(
    client: Client, tokens: Tokens, runtime: PluginRuntime, bystander: None,
) -> None:  # fmt: skip
    accepted: list[int] = []

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    # the service's own port: a real isp serve is below (test_network_...); here the
    # listener stands for any local service (PostgreSQL, Redis, the metrics port)
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await install(client, tokens, hostile(f"""
outcomes = []
for host, port in [("127.0.0.1", {port}), ("localhost", {port}), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        outcomes.append("connected")
    except OSError as exc:
        outcomes.append(type(exc).__name__)
raise PluginError(repr(outcomes), status=418)
"""))  # fmt: skip
        pids = worker_pids(runtime)

        status, problem = await create(client, tokens, "attack")

        assert status == 418, problem
        assert "connected" not in problem["detail"], problem
        assert accepted == []
    finally:
        server.close()
        await server.wait_closed()
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


async def test_a_fork_bomb_stops_at_the_process_limit(
    client: Client, tokens: Tokens, runtime: PluginRuntime, settings: Settings, bystander: None,
) -> None:  # fmt: skip
    await install(client, tokens, hostile("""
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        children += 1
except OSError as exc:
    raise PluginError(f"{children} {type(exc).__name__}", status=418)
"""))  # fmt: skip
    worker = worker_of(runtime)

    status, problem = await create(client, tokens, "attack")

    assert status == 418, problem
    children, error = problem["detail"].split()
    assert int(children) < settings.sandbox_processes
    assert error == "BlockingIOError"
    pids = descendants(worker.pid or 0)
    assert len(pids) > int(children)  # the forked children are there, under the worker
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


async def test_allocating_4_gib_fails_inside_the_worker_with_502(
    client: Client, tokens: Tokens, runtime: PluginRuntime, bystander: None,
) -> None:  # fmt: skip
    await install(client, tokens, hostile("hoard = bytearray(4 * 1024**3)\n"))
    pids = worker_pids(runtime)

    status, problem = await create(client, tokens, "attack")

    assert status == 502, problem
    assert "MemoryError" in problem["detail"]
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


@pytest.mark.parametrize(
    ("body", "sync"),
    [
        ("time.sleep(120)\n", True),  # a def hook: its thread cannot be cancelled
        ("while True:\n    pass\n", False),  # an async def that never yields
        ("while True:\n    pass\n", True),
    ],
    ids=["sleep-120", "async-busy-loop", "sync-busy-loop"],
)
async def test_a_hook_past_its_timeout_is_504_and_its_worker_is_killed(
    client: Client, tokens: Tokens, runtime: PluginRuntime, bystander: None,
    body: str, sync: bool,
) -> None:  # fmt: skip
    await install(client, tokens, hostile(body, sync=sync))
    worker = worker_of(runtime)
    pids = worker_pids(runtime)

    started = time.monotonic()
    status, problem = await create(client, tokens, "attack")
    took = time.monotonic() - started

    assert status == 504, problem
    assert problem["hook"] == "handlers.probe"
    assert took < TIMEOUT + 3
    await gone(pids)  # killed at the deadline (an async one after the grace)
    assert worker.quarantined is None  # a timeout is not a crash
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, set())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("os._exit(1)\n", "status 1"),
        ("ctypes.string_at(0)\n", "SIGSEGV"),
    ],
    ids=["os-exit", "segfault"],
)
async def test_a_dying_worker_fails_the_call_with_502_and_three_crashes_quarantine(
    client: Client, tokens: Tokens, runtime: PluginRuntime, bystander: None,
    body: str, why: str,
) -> None:  # fmt: skip
    await install(client, tokens, hostile(body))
    all_pids: set[int] = set()
    for _ in range(3):
        worker = runtime.worker("hostile")
        assert worker is not None
        await eventually(lambda w=worker: w.pid is not None, within=10)  # restarted
        all_pids |= descendants(worker.pid)  # type: ignore[arg-type]
        status, problem = await create(client, tokens, "attack")
        assert status == 502, problem
        assert problem["type"].endswith("worker-crashed"), problem
        assert why in problem["detail"]

    async def quarantined() -> Any:
        response = await client.get("/plugins/hostile", headers=auth(tokens.admin))
        body = await response.get_json()
        return body if body["status"] == "error" else None

    described = await eventually(quarantined, within=5)  # the third exit seen after its 502
    assert "crashed 3 times" in described["quarantined"]
    assert described["error"] == described["quarantined"]
    started = time.monotonic()
    status, problem = await create(client, tokens, "peace")  # its critical hook: 503, fast
    assert status == 503, problem
    assert time.monotonic() - started < 1
    await gone(all_pids)

    response = await client.put("/plugins/hostile/enable", headers=auth(tokens.admin))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["quarantined"] is None
    await still_serving(client, tokens, runtime)  # a fresh worker, crash count reset
    await uninstall_leaves_nothing(client, tokens, runtime, all_pids)


async def test_garbage_on_stdout_does_not_disturb_the_worker(
    client: Client, tokens: Tokens, runtime: PluginRuntime, bystander: None,
) -> None:  # fmt: skip
    await install(client, tokens, hostile("""
os.write(1, bytes(range(256)) * 4096)
os.write(1, b"\\x00\\x00\\x00\\x10{\\"type\\": \\"result\\"}\\n")
print("not a frame", flush=True)
os.write(2, os.urandom(65536))
return "after the garbage"
"""))  # fmt: skip
    pids = worker_pids(runtime)

    assert (await create(client, tokens, "attack"))[0] == 201
    assert (await create(client, tokens, "attack"))[0] == 201
    assert worker_of(runtime).crashes == 0
    await still_serving(client, tokens, runtime)
    await uninstall_leaves_nothing(client, tokens, runtime, pids)


# --- what a hook sees ------------------------------------------------------------------


async def test_a_hook_sees_a_read_only_snapshot_without_secrets(
    client: Client, tokens: Tokens, runtime: PluginRuntime
) -> None:
    await install(client, tokens, hostile("""
seen = {"name": customer.name, "email": customer.email, "id": customer.id}
try:
    customer.name = "changed"
except AttributeError as exc:
    seen["write"] = str(exc)
try:
    customer.reveal_password()
except PermissionError as exc:
    seen["secret"] = str(exc)
seen["db"] = type(db).__name__
raise PluginError(repr(sorted(seen.items())), status=418)
"""))  # fmt: skip
    response = await client.post(
        "/customers", json={"name": "attack", "email": "a@example.net"},
        headers=auth(tokens.operator),
    )  # fmt: skip
    problem = await response.get_json()

    assert response.status_code == 418, problem
    seen = dict(eval(problem["detail"]))  # noqa: S307 - the repr of a list of str pairs
    assert (seen["name"], seen["email"], seen["db"]) == ("attack", "a@example.net", "KeyValue")
    assert "read-only" in seen["write"]
    assert "secrets" in seen["secret"]


KV = """
import logging
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
async def note(customer, db):
    await db.put(customer.name, {"email": customer.email})
    logging.getLogger("notes").warning("noted %s: %s", customer.name, await db.get(customer.name))
    if customer.name.startswith("refuse"):
        raise PluginError("refused after writing", status=409)
"""


async def test_key_value_writes_commit_and_roll_back_with_the_workflow(
    client: Client, tokens: Tokens
) -> None:
    await install(client, tokens, zip_of("notes", plugin_files(
        "notes", handlers=KV, hooks=["customer_created"])))  # fmt: skip

    assert (await create(client, tokens, "refused-1"))[0] == 409
    assert (await create(client, tokens, "kept"))[0] == 201

    values = {row.key: row.value for row in await PluginValue.filter(plugin="notes")}
    assert values == {"kept": {"email": None}}


async def test_key_value_writes_roll_back_when_another_plugin_refuses_the_workflow(
    client: Client, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    for name, handlers in (("notes", KV), ("refuser", REFUSER)):  # refuser: after 0.2 s
        await install(client, tokens, zip_of(name, plugin_files(
            name, handlers=handlers, hooks=["customer_created"])))  # fmt: skip

    with caplog.at_level(logging.INFO, logger="isp.plugins.sandbox"):
        assert (await create(client, tokens, "written"))[0] == 409
    assert "noted written: {'email': None}" in caplog.text  # written, read back, in the workflow

    assert await PluginValue.filter(plugin="notes").count() == 0


# --- install, permissions, reload, no bubblewrap ----------------------------------------


async def test_a_plugin_with_models_cannot_be_sandboxed(client: Client, tokens: Tokens) -> None:
    files = plugin_files("tabled", hooks=[])
    files["models.py"] = "from tortoise import fields, models\n"
    response = await upload(client, tokens.admin, zip_of("tabled", files))

    assert response.status_code == 422
    problem = await response.get_json()
    assert "cannot be sandboxed" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["file", "tabled/models.py"]
    assert (await client.get("/plugins/tabled", headers=auth(tokens.admin))).status_code == 404


NETWORK = """
import socket
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
def reach(customer, db):
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    except OSError as exc:
        raise PluginError(type(exc).__name__, status=418)
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_network_needs_the_manifest_permission_and_the_operators_grant(
    client: Client, tokens: Tokens
) -> None:
    accepted: list[int] = []

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    files = plugin_files("netty", handlers=NETWORK.format(port=port), hooks=["customer_created"],
                         permissions={"network": True})  # fmt: skip
    try:
        refused = await upload(client, tokens.admin, zip_of("netty", files))
        assert refused.status_code == 409
        problem = await refused.get_json()
        assert problem["permissions"] == ["network"]
        assert "?grant=network" in problem["detail"]

        body = await install(client, tokens, zip_of("netty", files), "?grant=network")
        assert body["permissions"] == {"network": True, "secrets": False}
        assert (await create(client, tokens, "c"))[0] == 201
        assert accepted == [1]
    finally:
        server.close()
        await server.wait_closed()
    entries = (await (await client.get("/audit", headers=auth(tokens.admin))).get_json())["entries"]
    installed = next(e for e in entries if e["detail"].get("outcome") == "installed")
    assert installed["detail"]["granted"] == ["network"]


async def test_an_unknown_grant_is_422(client: Client, tokens: Tokens) -> None:
    response = await upload(client, tokens.admin, hostile("pass\n"), "?grant=root")

    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"] == ["query", "grant"]


VERSIONED = """
import asyncio
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
async def which(customer, db):
    if customer.name == "slow":
        await asyncio.sleep(0.5)
    raise PluginError("{version}", status=418)
"""


async def test_an_upgrade_restarts_the_worker_and_calls_in_flight_finish_on_the_old_one(
    client: Client, tokens: Tokens, runtime: PluginRuntime
) -> None:
    def version(number: str) -> bytes:
        return zip_of("versioned", plugin_files("versioned", number, hooks=["customer_created"],
                      handlers=VERSIONED.format(version=number)))  # fmt: skip

    await install(client, tokens, version("1.0.0"))
    old = worker_of(runtime, "versioned")
    pids = worker_pids(runtime, "versioned")

    in_flight = asyncio.create_task(create(client, tokens, "slow"))
    await eventually(lambda: any(p.calls for p in old._live), within=5)
    response = await upload(client, tokens.admin, version("1.1.0"))
    assert response.status_code == 200, await response.get_data(as_text=True)

    assert (await in_flight)[1]["detail"] == "1.0.0"
    assert (await create(client, tokens, "now"))[1]["detail"] == "1.1.0"
    assert runtime.worker("versioned") is not old
    await gone(pids)


LIMITS_PROBE = """
import resource
names = ("AS", "NOFILE", "NPROC")
limits = [resource.getrlimit(getattr(resource, f"RLIMIT_{n}"))[0] for n in names]
raise PluginError(repr(limits), status=418)
"""


async def test_a_plugins_own_limits_apply_to_its_worker_only(
    client: Client, tokens: Tokens, runtime: PluginRuntime
) -> None:
    mb = 1024 * 1024
    await install(client, tokens, hostile(LIMITS_PROBE, name="limited"))
    status, problem = await create(client, tokens, "attack")
    assert (status, problem["detail"]) == (418, repr([256 * mb, 64, 16])), problem
    assert worker_of(runtime, "limited").spec.limits.memory_mb == 256
    assert (await client.delete("/plugins/limited", headers=auth(tokens.admin))).status_code == 204

    await install(client, tokens, hostile(LIMITS_PROBE))  # "hostile": the deployment's limits
    status, problem = await create(client, tokens, "attack")
    assert (status, problem["detail"]) == (418, repr([512 * mb, 256, 16])), problem


async def test_without_bubblewrap_a_sandboxed_plugin_is_an_error_never_run_in_process(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url, tmp_path, plugin_sandbox_local=True)
    write_plugin(settings.plugins_dir, "local", plugin_files("local", hooks=["customer_created"],
                 handlers=BYSTANDER))  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    app = create_app(settings)
    async with app.test_app():
        runtime: PluginRuntime = app.extensions["isp.plugins"]
        described = runtime.describe("local")

    assert (described["status"], described["isolation"]) == ("error", "sandbox")
    assert "bubblewrap is not installed" in described["error"]
    assert "isp_plugins.local" not in sys.modules


async def test_a_plugin_in_a_served_instance_cannot_reach_its_port_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    """A real ``isp serve`` (Hypercorn on a port): the plugin tries the service's own port."""
    env = server_env(tmp_path, ISP_PLUGIN_UNSIGNED="sandbox")
    token = await admin_token(env)
    server = Server(env)
    await server.start()
    try:
        await server.ready(60)
        assert server.process is not None
        data = hostile(f"""
try:
    socket.create_connection(("127.0.0.1", {server.port}), timeout=1).close()
except OSError as exc:
    raise PluginError(type(exc).__name__, status=418)
raise PluginError("connected", status=500)
""")  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            files = {"file": ("hostile.zip", data, "application/zip")}
            installed = await http.post("/plugins/upload", files=files)
            assert installed.status_code == 201, installed.text
            assert installed.json()["isolation"] == "sandbox"
            pids = descendants(server.process.pid) - {server.process.pid}
            assert pids  # its worker runs under the service

            attacked = await http.post("/customers", json={"name": "attack"})
            assert (attacked.status_code, attacked.json()["detail"]) == (
                418,
                "ConnectionRefusedError",
            )
            assert (await http.post("/customers", json={"name": "peace"})).status_code == 201
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()
    await gone(pids)  # the service's shutdown stopped its workers


COMPENSATED = """
import asyncio, logging
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
async def act(customer, db):
    return "acted"

@act.compensate
async def undo(customer, db):
    logging.getLogger("comp").warning("undone %s", customer.name)
"""

REFUSER = """
import asyncio
from isp.errors import PluginError
from isp.plugins import registry

@registry.hook("customer_created")
async def refuse(customer, db):
    await asyncio.sleep(0.2)
    raise PluginError("no", status=409)
"""


async def test_a_sandboxed_hooks_compensation_runs_in_its_worker_when_the_workflow_fails(
    client: Client, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    for name, handlers in (("comp", COMPENSATED), ("refuser", REFUSER)):
        await install(client, tokens, zip_of(name, plugin_files(
            name, handlers=handlers, hooks=["customer_created"])))  # fmt: skip

    with caplog.at_level(logging.INFO, logger="isp.plugins.sandbox"):
        status, _ = await create(client, tokens, "Ada")
        assert status == 409
        await eventually(lambda: "undone Ada" in caplog.text, within=5)


async def test_an_upload_bound_for_the_sandbox_without_bubblewrap_is_refused(
    client: Client, tokens: Tokens, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    response = await upload(client, tokens.admin, hostile("pass\n"))

    assert response.status_code == 422
    assert "bubblewrap is not installed" in (await response.get_json())["detail"]
    assert (await client.get("/plugins/hostile", headers=auth(tokens.admin))).status_code == 404


AFTER_COMMIT = """
from isp.plugins import registry

@registry.after_commit("customer_created")
async def remember(customer, delivery, db):
    await db.put(customer.name, {"attempt": delivery.attempt, "key": delivery.id})
"""


async def test_a_sandboxed_after_commit_hook_is_delivered_with_its_delivery(
    client: Client, tokens: Tokens
) -> None:
    await install(client, tokens, zip_of("later", plugin_files(
        "later", handlers=AFTER_COMMIT,
        hooks=[{"name": "customer_created", "after_commit": True}])))  # fmt: skip

    assert (await create(client, tokens, "Ada"))[0] == 201

    async def delivered() -> Any:
        row = await PluginValue.get_or_none(plugin="later", key="Ada")
        return row.value if row else None

    value = await eventually(delivered, within=10)
    assert value["attempt"] == 1
    assert len(value["key"]) == 36  # the delivery's idempotency key


LIFECYCLE = """
import logging
from isp.plugins import Plugin

log = logging.getLogger("lifecycle")


def on_load():
    if {fail!r}:
        raise RuntimeError("nope")
    log.warning("on_load ran")


async def on_disable():
    log.warning("on_disable ran")


plugin = Plugin(on_load=on_load, on_disable=on_disable)
"""


async def test_lifecycle_callbacks_run_in_the_worker_and_a_failing_one_refuses_the_upload(
    client: Client, tokens: Tokens, runtime: PluginRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    def lifecycle(fail: bool, version: str) -> bytes:
        return zip_of("cycle", plugin_files("cycle", version, init=LIFECYCLE.format(fail=fail)))

    with caplog.at_level(logging.INFO, logger="isp.plugins.sandbox"):
        await install(client, tokens, lifecycle(False, "1.0.0"))
        assert "on_load ran" in caplog.text
        response = await client.put("/plugins/cycle/disable", headers=auth(tokens.admin))
        assert response.status_code == 200
        await eventually(lambda: "on_disable ran" in caplog.text, within=5)

    refused = await upload(client, tokens.admin, lifecycle(True, "1.1.0"))

    assert refused.status_code == 422
    assert "on_load failed: HookCrashed: RuntimeError: nope" in (await refused.get_json())["detail"]
    assert runtime.version_of("cycle") == "1.0.0"  # the old version keeps serving
    assert worker_of(runtime, "cycle").state == "running"


# --- settings ---------------------------------------------------------------------------

SETTINGS_INIT = """
from pydantic import BaseModel, Field, SecretStr, field_validator
from isp.plugins import Plugin

class Settings(BaseModel):
    greeting: str = "hello"
    limit: int = Field(5, ge=1, le=10)
    token: SecretStr | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("greeting")
    @classmethod
    def no_shouting(cls, value: str) -> str:  # what a JSON schema cannot say
        if value.isupper():
            raise ValueError("no shouting")
        return value

plugin = Plugin(settings=Settings)
"""

SETTINGS_SHOWN = """
import json
from isp.errors import PluginError
from isp.plugins import registry
from . import plugin

@registry.hook("customer_created")
def show(customer, db):
    s = plugin.settings
    token = None if s.token is None else s.token.get_secret_value()
    raise PluginError(json.dumps([type(s).__name__, s.greeting, s.limit, token, s.tags]),
                      status=418)
"""


def configurable(**manifest: Any) -> bytes:
    return zip_of("tuned", plugin_files("tuned", init=SETTINGS_INIT, handlers=SETTINGS_SHOWN,
                                        hooks=["customer_created"], **manifest))  # fmt: skip


async def shown(client: Client, tokens: Tokens) -> list[Any]:
    status, problem = await create(client, tokens, "show")
    assert status == 418, problem
    found: list[Any] = json.loads(problem["detail"])
    return found


async def put_settings(client: Client, tokens: Tokens, body: dict[str, Any]) -> Any:
    return await client.put("/plugins/tuned/settings", json=body, headers=auth(tokens.admin))


async def test_a_sandboxed_plugin_gets_its_stored_settings_and_every_change_without_secrets(
    client: Client, tokens: Tokens, runtime: PluginRuntime
) -> None:
    await install(client, tokens, configurable())
    assert await shown(client, tokens) == ["Settings", "hello", 5, None, []]

    response = await put_settings(client, tokens, {"greeting": "hi", "limit": 7, "tags": ["a"],
                                                   "token": "s3cret"})  # fmt: skip
    assert response.status_code == 200, await response.get_data(as_text=True)
    got = await client.get("/plugins/tuned/settings", headers=auth(tokens.admin))
    view = await got.get_json()
    assert view["values"] == {"greeting": "hi", "limit": 7, "tags": ["a"], "token": "********"}
    assert view["schema"]["title"] == "Settings"  # the plugin's own schema
    assert view["schema"]["properties"]["limit"]["maximum"] == 10
    # the plugin's own model, the new values at once; the secret stays out without the grant
    assert await shown(client, tokens) == ["Settings", "hi", 7, None, ["a"]]

    worker = worker_of(runtime, "tuned")
    os.killpg(worker.pid, signal.SIGKILL)  # the next worker starts with the same values
    await eventually(lambda: worker.pid is None)
    await eventually(lambda: worker.pid is not None, within=10)
    assert await shown(client, tokens) == ["Settings", "hi", 7, None, ["a"]]


async def test_bad_settings_for_a_sandboxed_plugin_are_422_and_change_nothing(
    client: Client, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    await install(client, tokens, configurable())

    for body, field in (({"limit": 11}, "limit"), ({"tags": "a"}, "tags"), ({"nope": 1}, "nope")):
        response = await put_settings(client, tokens, body)
        assert response.status_code == 422, body
        assert (await response.get_json())["errors"][0]["loc"] == ["body", field]
    assert await shown(client, tokens) == ["Settings", "hello", 5, None, []]

    # a value only the plugin's own validator refuses: the worker keeps the default, says why
    assert (await put_settings(client, tokens, {"greeting": "HEY"})).status_code == 200
    with caplog.at_level(logging.INFO, logger="isp.plugins.sandbox"):
        assert await shown(client, tokens) == ["Settings", "hello", 5, None, []]
    assert "setting greeting: stored value is invalid" in caplog.text


async def test_a_granted_sandboxed_plugin_gets_its_secret_and_the_environment_wins(
    client: Client, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISP_PLUGIN_TUNED__LIMIT", "9")
    await install(client, tokens, configurable(permissions={"secrets": True}), "?grant=secrets")
    assert (await put_settings(client, tokens, {"token": "s3cret"})).status_code == 200

    assert await shown(client, tokens) == ["Settings", "hello", 9, "s3cret", []]


UNDESCRIBABLE = """
import socket
from pydantic import BaseModel, ConfigDict
from isp.plugins import Plugin

class Settings(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    peer: socket.socket | None = None

plugin = Plugin(settings=Settings)
"""


async def test_settings_without_a_json_schema_refuse_the_upload_for_the_sandbox(
    client: Client, tokens: Tokens
) -> None:
    files = plugin_files("opaque", init=UNDESCRIBABLE, hooks=[])

    response = await upload(client, tokens.admin, zip_of("opaque", files))

    assert response.status_code == 422, await response.get_data(as_text=True)
    assert "cannot be described as a JSON schema" in (await response.get_json())["detail"]
    assert (await client.get("/plugins/opaque", headers=auth(tokens.admin))).status_code == 404
