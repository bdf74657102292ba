"""Sandboxed plugin workers under real bubblewrap: hostile plugins stay contained.

Each test writes a hostile plugin into a data dir laid out as the service's (secret key
and SQLite file next to the plugin folders), runs it through ``SandboxedPlugin`` and
checks the host's view: the documented error, a worker that comes back, and no process
left once the sandbox is stopped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import isp
from isp.config import Settings, load_settings
from isp.errors import ConfigError, HookCrashed, HookTimeout, PluginError
from isp.plugins.sandbox import (
    BubblewrapLauncher,
    Limits,
    MemoryStore,
    PluginQuarantined,
    SandboxedPlugin,
    SandboxUnavailable,
    WorkerCrashed,
    WorkerSpec,
)
from tests.conftest import TEST_SECRET_KEY
from tests.plugins.builders import eventually, free_port, plugin_files, write_plugin

HOSTILE = """
import ctypes, logging, os, socket, sys, time
from isp.plugins import PluginError, registry

@registry.hook("customer_created")
async def noop(customer):
    return None

@registry.hook("customer_created")
async def echo(customer, db):
    return {"name": customer.name, "tags": list(customer.tags), "city": customer.address.city}

@registry.hook("customer_created")
async def mutate(customer):
    customer.name = "changed"

@registry.hook("customer_created")
async def refuse(customer):
    raise PluginError("no free port on the access router", status=409)

@registry.hook("customer_created")
async def whoami(customer):
    return {"uid": os.getuid(), "env": dict(os.environ), "pid": os.getpid()}

@registry.hook("customer_created")
async def read(customer):
    found = {}
    for path in customer.paths:
        try:
            with open(path, "rb") as handle:
                found[path] = handle.read(16).hex()
        except OSError as exc:
            found[path] = type(exc).__name__
    return found

@registry.hook("customer_created")
async def write(customer):
    done = {}
    for path in customer.paths:
        try:
            with open(path, "w") as handle:
                handle.write("owned")
            done[path] = "written"
        except OSError as exc:
            done[path] = type(exc).__name__
    return done

@registry.hook("customer_created")
def connect(customer):
    try:
        socket.create_connection(("127.0.0.1", customer.port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__

@registry.hook("customer_created")
async def fork_bomb(customer):
    children = 0
    try:
        while children < 10_000:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"children": children, "error": type(exc).__name__}
    return {"children": children, "error": None}

@registry.hook("customer_created")
async def allocate(customer):
    return len(bytearray(4 * 1024 ** 3))

@registry.hook("customer_created")
def spin(customer):
    while True:
        pass

@registry.hook("customer_created")
async def spin_async(customer):
    while True:
        pass

@registry.hook("customer_created")
def sleep(customer):
    time.sleep(120)

@registry.hook("customer_created")
async def exit(customer):
    os._exit(1)

@registry.hook("customer_created")
async def segfault(customer):
    ctypes.string_at(0)

@registry.hook("customer_created")
async def chatter(customer):
    noise = b"\\x00\\x00\\x00\\x10" + b'{"type":"result"' + bytes(range(256)) * 64
    for _ in range(50):
        sys.stdout.buffer.write(noise + b"\\n")
        print("garbage", "x" * 2000)
        print("more garbage", file=sys.stderr)
    sys.stdout.flush()
    return "still speaking the protocol"

@registry.hook("customer_created")
async def forge(customer):
    import json
    os.write(json.loads(sys.argv[-1])["fd"], b"\\xff\\xff\\xff\\xff not a frame")

@registry.hook("customer_created")
async def slow_put(customer, db):
    import asyncio
    try:
        await asyncio.sleep(30)
        await db.put("late", 1)
    finally:
        logging.getLogger("hostile").warning("slow_put ended")

@registry.hook("customer_created")
def logs(customer):
    logging.getLogger("hostile").warning("customer %s looks odd", customer.name)

@registry.hook("customer_created")
async def modules(customer):
    return sorted({name.split(".")[0] for name in sys.modules})

@registry.hook("customer_created")
async def counter(customer, db):
    count = await db.get("count", 0)
    await db.put("count", count + 1)
    await db.put("scratch", customer.name)
    await db.delete("scratch")
    return await db.get("count")
"""

Factory = Callable[..., SandboxedPlugin]
NAME = f"hostile{os.getpid()}"  # its own user id: runs side by side do not see each other


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir as the service keeps it: the key and the database beside the plugins."""
    data = tmp_path / "data"
    (data / "plugins").mkdir(parents=True)
    (data / "secret.key").write_text(TEST_SECRET_KEY)
    (data / "isp.sqlite3").write_bytes(b"SQLite format 3\x00" + bytes(100))
    return data


@pytest.fixture
def folder(data_dir: Path) -> Path:
    files = plugin_files(NAME, handlers=HOSTILE, hooks=["customer_created"])
    return write_plugin(data_dir / "plugins", NAME, files)


@pytest.fixture
async def sandbox(folder: Path) -> AsyncIterator[Factory]:
    """Build sandboxes of the hostile plugin; each is stopped, and checked empty, after."""
    made: list[SandboxedPlugin] = []

    def build(*, limits: Limits | None = None, network: bool = False, **kw: Any) -> SandboxedPlugin:
        spec = WorkerSpec(NAME, folder, limits=limits or Limits(), network=network)
        made.append(SandboxedPlugin(spec, **kw))
        return made[-1]

    yield build
    pids = [plugin.pid for plugin in made]
    for plugin in made:
        await plugin.stop()
    assert not [pid for pid in pids if pid is not None and alive(pid)]
    for plugin in made:
        await eventually(lambda uid=plugin.spec.uid: not processes_of(uid), within=5)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def exists(path: Path) -> bool:
    return path.exists()


def processes_of(uid: int) -> list[int]:
    """Process ids running as ``uid`` (a sandboxed plugin's own user)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        line = next(row for row in status.splitlines() if row.startswith("Uid:"))
        if int(line.split()[1]) == uid:
            found.append(int(entry.name))
    return found


async def test_hooks_get_read_only_snapshots_and_results_come_back(sandbox: Factory) -> None:
    plugin = sandbox()
    await plugin.start()
    assert {h.function for h in plugin.hooks} >= {"handlers.echo", "handlers.spin"}
    subject = {"name": "Ann", "tags": ["a", "b"], "address": {"city": "Riga"}}
    assert await plugin.call("handlers.echo", subject, timeout=5) == {
        "name": "Ann", "tags": ["a", "b"], "city": "Riga"}  # fmt: skip
    with pytest.raises(HookCrashed, match="read-only"):
        await plugin.call("handlers.mutate", subject, timeout=5)


async def test_the_worker_loads_no_database_or_web_framework(sandbox: Factory) -> None:
    loaded = set(await (await started(sandbox())).call("handlers.modules", {}, timeout=5))
    assert "isp" in loaded
    assert not loaded & {"tortoise", "pypika_tortoise", "asyncpg", "aiosqlite", "quart",
                         "hypercorn", "pydantic_settings", "cryptography"}  # fmt: skip


async def test_plugin_error_keeps_its_status_and_message(sandbox: Factory) -> None:
    plugin = sandbox()
    with pytest.raises(PluginError) as raised:
        await (await started(plugin)).call("handlers.refuse", {}, timeout=5)
    assert type(raised.value) is PluginError
    assert raised.value.status_code == 409
    assert raised.value.detail == "no free port on the access router"
    assert raised.value.plugin == NAME


async def test_secret_key_database_and_environment_are_out_of_reach(
    sandbox: Factory, data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISP_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("ISP_DATABASE_URL", "postgres://isp:pw@127.0.0.1/isp")
    plugin = await started(sandbox())
    source_tree = Path(isp.__file__).parents[1]
    paths = [str(data_dir / "secret.key"), str(data_dir / "isp.sqlite3"),
             str(folder / "manifest.json"), str(source_tree / "pyproject.toml")]  # fmt: skip
    found = await plugin.call("handlers.read", {"paths": paths}, timeout=5)
    assert found[paths[0]] == "FileNotFoundError"
    assert found[paths[1]] == "FileNotFoundError"
    assert found[paths[2]] != "FileNotFoundError"  # its own folder is readable
    assert found[paths[3]] == "FileNotFoundError"  # of the source tree, only `isp` is bound
    seen = await plugin.call("handlers.whoami", {}, timeout=5)
    assert not [key for key in seen["env"] if key.startswith("ISP_")]
    assert TEST_SECRET_KEY not in str(seen["env"])
    assert seen["uid"] == plugin.spec.uid != 0


async def test_no_network_unless_granted(sandbox: Factory) -> None:
    accepted = asyncio.Event()

    async def on_connect(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    async with server:
        confined = await started(sandbox())
        assert await confined.call("handlers.connect", {"port": port}, timeout=10) != "connected"
        assert not accepted.is_set()
        await confined.stop()
        granted = await started(sandbox(network=True))
        assert await granted.call("handlers.connect", {"port": port}, timeout=10) == "connected"
        await asyncio.wait_for(accepted.wait(), 5)


async def test_writes_outside_its_private_tmp_fail(
    sandbox: Factory, data_dir: Path, folder: Path
) -> None:
    plugin = await started(sandbox())
    probe = f"/tmp/isp-sandbox-probe-{os.getpid()}"
    paths = [str(folder / "owned.txt"), str(data_dir / "owned.txt"), "/usr/owned.txt", probe]
    done = await plugin.call("handlers.write", {"paths": paths}, timeout=5)
    refused = {"OSError", "PermissionError", "FileNotFoundError"}  # EROFS, EACCES, ENOENT
    assert {done[path] for path in paths[:3]} <= refused
    assert done[probe] == "written"  # the private /tmp
    assert not [p for p in (folder / "owned.txt", data_dir / "owned.txt", Path(probe)) if exists(p)]


async def test_fork_bomb_is_bounded_and_the_host_survives(sandbox: Factory) -> None:
    plugin = await started(sandbox(limits=Limits(processes=16)))
    outcome = await plugin.call("handlers.fork_bomb", {}, timeout=20)
    assert outcome["error"] == "BlockingIOError"  # EAGAIN from fork: RLIMIT_NPROC
    assert outcome["children"] < 16
    assert len(processes_of(plugin.spec.uid)) <= 16
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


async def test_allocating_4_gib_fails_with_memory_error(sandbox: Factory) -> None:
    plugin = await started(sandbox())
    with pytest.raises(HookCrashed, match="MemoryError"):
        await plugin.call("handlers.allocate", {}, timeout=10)
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


async def test_cpu_limit_ends_a_worker_that_spins_past_it(sandbox: Factory) -> None:
    plugin = await started(sandbox(limits=Limits(cpu_seconds=1)))
    with pytest.raises(WorkerCrashed, match="SIGXCPU|SIGKILL") as raised:
        await plugin.call("handlers.spin", {}, timeout=30)
    assert raised.value.status_code == 502
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


@pytest.mark.parametrize("hook", ["handlers.spin", "handlers.spin_async", "handlers.sleep"])
async def test_hook_past_its_timeout_is_killed_and_the_worker_restarts(
    sandbox: Factory, hook: str
) -> None:
    plugin = await started(sandbox())
    old = plugin.pid
    assert old is not None
    started_at = time.monotonic()
    with pytest.raises(HookTimeout) as raised:
        await plugin.call(hook, {}, timeout=1)
    assert time.monotonic() - started_at < 2.5
    assert raised.value.status_code == 504
    assert await eventually(lambda: not alive(old), within=3)
    assert await eventually(lambda: plugin.pid not in (None, old), within=10)  # restarted
    assert await plugin.call("handlers.noop", {}, timeout=5) is None
    assert plugin.pid not in (None, old)
    assert plugin.quarantined is None  # a timeout is not a crash


@pytest.mark.parametrize(("hook", "why"), [("handlers.exit", "status 1"),
                                           ("handlers.segfault", "SIGSEGV")])  # fmt: skip
async def test_crash_fails_calls_in_flight_with_502_and_restarts(
    sandbox: Factory, hook: str, why: str
) -> None:
    plugin = await started(sandbox())
    sleeping = asyncio.create_task(plugin.call("handlers.sleep", {}, timeout=30))
    await asyncio.sleep(0.2)
    with pytest.raises(WorkerCrashed, match=why) as raised:
        await plugin.call(hook, {}, timeout=10)
    assert raised.value.status_code == 502
    with pytest.raises(WorkerCrashed):
        await sleeping
    assert await plugin.call("handlers.noop", {}, timeout=5) is None
    assert plugin.state == "running"


async def test_garbage_on_stdout_does_not_touch_the_protocol(
    sandbox: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = await started(sandbox(output_limit=4096))
    with caplog.at_level("INFO", logger="isp.plugins.sandbox"):
        for _ in range(2):
            got = await plugin.call("handlers.chatter", {}, timeout=10)
            assert got == "still speaking the protocol"
    logged = [r for r in caplog.records if r.getMessage().startswith("plugin std")]
    assert logged
    assert sum(len(r.getMessage()) for r in logged) < 4096 + 600  # bounded: one line over


async def test_bytes_forged_on_the_protocol_socket_count_as_a_crash(sandbox: Factory) -> None:
    plugin = await started(sandbox())
    with pytest.raises(WorkerCrashed, match="protocol error"):
        await plugin.call("handlers.forge", {}, timeout=10)
    assert plugin.crashes == 1  # counted towards quarantine
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


async def test_plugin_that_cannot_load_is_refused_with_its_reason(data_dir: Path) -> None:
    files = plugin_files("broken", handlers="raise RuntimeError('no config')\n",
                         hooks=["customer_created"])  # fmt: skip
    folder = write_plugin(data_dir / "plugins", "broken", files)
    plugin = SandboxedPlugin(WorkerSpec("broken", folder))
    with pytest.raises(PluginError, match="no config") as raised:
        await plugin.start()
    assert raised.value.status_code == 503
    assert plugin.pid is None
    assert await eventually(lambda: not processes_of(plugin.spec.uid), within=5)
    await plugin.stop()


async def test_plugin_log_records_reach_the_host_log(
    sandbox: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = await started(sandbox())
    with caplog.at_level("INFO", logger="isp.plugins.sandbox"):
        await plugin.call("handlers.logs", {"name": "Ann"}, timeout=5)
        record = await eventually(
            lambda: next((r for r in caplog.records if "looks odd" in r.getMessage()), None)
        )
    assert record.levelname == "WARNING"
    assert record.getMessage() == "plugin log hostile: customer Ann looks odd"
    assert record.__dict__["plugin"] == NAME


async def test_three_crashes_in_60_s_quarantine_until_reset(sandbox: Factory) -> None:
    plugin = await started(sandbox(backoff=(0.01, 0.05)))
    for _ in range(3):
        with pytest.raises(WorkerCrashed):
            await plugin.call("handlers.exit", {}, timeout=10)
    assert plugin.state == "quarantined"
    assert plugin.crashes == 3
    assert "3 times in 60 s" in str(plugin.quarantined)
    started_at = time.monotonic()
    with pytest.raises(PluginQuarantined) as raised:
        await plugin.call("handlers.noop", {}, timeout=5)
    assert raised.value.status_code == 503
    assert time.monotonic() - started_at < 0.5  # fails fast: no worker is started
    assert plugin.pid is None
    plugin.reset()
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


async def test_key_value_requests_run_in_the_store_of_each_call(sandbox: Factory) -> None:
    class Recording(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[tuple[str, str]] = []

        async def get(self, key: str) -> Any:
            self.ops.append(("get", key))
            return await super().get(key)

        async def put(self, key: str, value: Any) -> None:
            self.ops.append(("put", key))
            await super().put(key, value)

        async def delete(self, key: str) -> None:
            self.ops.append(("delete", key))
            await super().delete(key)

    first, second = Recording(), Recording()
    plugin = await started(sandbox(store=first))
    assert await plugin.call("handlers.counter", {"name": "a"}, timeout=5) == 1
    assert await plugin.call("handlers.counter", {"name": "b"}, timeout=5) == 2
    assert await plugin.call("handlers.counter", {"name": "c"}, timeout=5, store=second) == 1
    assert first.data == {"count": 2}
    assert second.data == {"count": 1}
    assert second.ops == [("get", "count"), ("put", "count"), ("put", "scratch"),
                          ("delete", "scratch"), ("get", "count")]  # fmt: skip


async def test_a_cancelled_call_cancels_the_hook_in_the_worker(
    sandbox: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = await started(sandbox())
    with caplog.at_level("INFO", logger="isp.plugins.sandbox"):
        call = asyncio.create_task(plugin.call("handlers.slow_put", {}, timeout=60))
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: any("slow_put ended" in r.getMessage() for r in caplog.records))
    assert plugin.store.data == {}  # type: ignore[attr-defined]
    assert await plugin.call("handlers.noop", {}, timeout=5) is None


async def test_stop_leaves_no_process(sandbox: Factory) -> None:
    plugin = await started(sandbox())
    pid = plugin.pid
    assert pid is not None
    assert processes_of(plugin.spec.uid)
    busy = asyncio.create_task(plugin.call("handlers.sleep", {}, timeout=60))
    await asyncio.sleep(0.2)
    await plugin.stop()
    with pytest.raises(WorkerCrashed):
        await busy
    assert not alive(pid)
    assert await eventually(lambda: not processes_of(plugin.spec.uid), within=5)
    with pytest.raises(PluginError):
        await plugin.call("handlers.noop", {}, timeout=5)


def test_missing_bubblewrap_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed"):
        BubblewrapLauncher()
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed"):
        BubblewrapLauncher(bwrap=str(tmp_path / "bwrap"))


def test_command_confines_by_default_and_shares_the_network_only_when_granted(
    folder: Path,
) -> None:
    launcher = BubblewrapLauncher()
    confined = launcher.command(WorkerSpec(NAME, folder), 7)
    granted = launcher.command(WorkerSpec(NAME, folder, network=True), 7)
    for command in (confined, granted):
        assert {"--die-with-parent", "--new-session", "--clearenv", "--unshare-pid"} <= set(command)
        assert ["--ro-bind", str(folder), str(folder)] == command[
            command.index(str(folder)) - 1 : command.index(str(folder)) + 2
        ]
    assert "--unshare-net" in confined
    assert "--unshare-net" not in granted
    assert not [key for key in launcher.environment() if key.startswith("ISP_")]


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISP_SANDBOX_MEMORY_MB", "512")
    monkeypatch.setenv("ISP_SANDBOX_PROCESSES", "4")
    with pytest.raises(ConfigError, match="ISP_SANDBOX_PROCESSES"):
        load_settings()
    monkeypatch.setenv("ISP_SANDBOX_PROCESSES", "64")
    assert Limits.from_settings(load_settings()) == Limits(memory_mb=512, processes=64)


def test_a_plugins_own_limits_from_the_environment_override_the_deployments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ISP_SANDBOX_MEMORY_MB", "512")
    monkeypatch.setenv("ISP_SANDBOX_LIMITS__BILLING__MEMORY_MB", "2048")
    monkeypatch.setenv("ISP_SANDBOX_LIMITS__BILLING__FILES", "64")
    settings = load_settings()
    assert Limits.from_settings(settings, "billing") == Limits(memory_mb=2048, files=64)
    assert Limits.from_settings(settings, "other") == Limits(memory_mb=512)
    assert Limits.from_settings(settings) == Limits(memory_mb=512)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ISP_SANDBOX_LIMITS__BILLING__MEMROY_MB", "64", "ISP_SANDBOX_LIMITS__BILLING__MEMROY_MB"),
        ("ISP_SANDBOX_LIMITS__BILLING__PROCESSES", "2", "ISP_SANDBOX_LIMITS__BILLING__PROCESSES"),
        ("ISP_SANDBOX_LIMITS__BILLING__FILES", "many", "ISP_SANDBOX_LIMITS__BILLING__FILES"),
        ("ISP_SANDBOX_LIMITS", '{"Bad-Name": {"files": 64}}', "ISP_SANDBOX_LIMITS"),
        ("ISP_SANDBOX_LIMITS", "not json", "ISP_SANDBOX_LIMITS"),
    ],
)
def test_a_bad_plugin_limit_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"{named}: ") as raised:
        load_settings()
    assert raised.value.extra["errors"][0]["variable"] == named


def test_limits_come_from_settings() -> None:
    settings = Settings(sandbox_memory_mb=256, sandbox_cpu_seconds=30, sandbox_files=64,
                        sandbox_processes=8)  # fmt: skip
    assert Limits.from_settings(settings) == Limits(256, 30, 64, 8)


async def started(plugin: SandboxedPlugin) -> SandboxedPlugin:
    await plugin.start()
    return plugin
