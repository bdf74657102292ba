"""Builders for plugin tests: plugin folders and zips, real server processes, polling.

One home for what plugin tests need to build, so a test says only what is special
about its plugin (a handler, a manifest field) and waits on conditions, not on time.

``zipfile`` writes only well-formed archives: it resets flag bits and sizes on write and
cuts names at a NUL. :func:`entry` and :func:`make_zip` get around that, so a test can
build exactly the archive an attacker would send.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import stat
import struct
import sys
import time
import warnings
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
from quart.typing import TestClientProtocol as Client
from werkzeug.datastructures import FileStorage

from tests.conftest import TEST_SECRET_KEY, auth

INIT = "from isp.plugins import Plugin\n\nplugin = Plugin()\n"


def plugin_files(
    name: str,
    version: str = "1.0.0",
    *,
    handlers: str | None = None,
    init: str = INIT,
    hooks: list[Any] | None = None,
    **manifest: Any,
) -> dict[str, str]:
    """The files of a plugin: manifest, ``__init__.py`` and (optionally) ``handlers.py``."""
    body = {"name": name, "version": version, "description": f"{name} plugin",
            "hooks": hooks if hooks is not None else [], **manifest}  # fmt: skip
    files = {"manifest.json": json.dumps(body), "__init__.py": init}
    if handlers is not None:
        files["handlers.py"] = handlers
    return files


def write_plugin(plugins_dir: Path, name: str, files: Mapping[str, str]) -> Path:
    folder = plugins_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    return folder


def zip_of(name: str, files: Mapping[str, str | bytes], *, folder: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, text in files.items():
            archive.writestr(f"{name}/{rel}" if folder else rel, text)
    return buffer.getvalue()


STAMP_HANDLERS = """
from isp.plugins import registry

VERSION = {version!r}

@registry.hook("customer_created")
async def stamp(customer, db):
    customer.address = "{name}-" + VERSION
    await customer.save(using_db=db, update_fields=["address"])
"""


def stamp_files(
    name: str = "stamp", version: str = "1.0.0", handlers: str | None = None, **manifest: Any
) -> dict[str, str]:
    """The ``stamp`` plugin (its hook writes ``<name>-<version>`` into the address)."""
    return plugin_files(
        name,
        version,
        handlers=handlers or STAMP_HANDLERS.format(name=name, version=version),
        hooks=["customer_created"],
        author="tests",
        **manifest,
    )


def stamp_zip(name: str = "stamp", version: str = "1.0.0", folder: bool = True, **kw: Any) -> bytes:
    return zip_of(name, stamp_files(name, version, **kw), folder=folder)


async def upload(client: Client, token: str, data: bytes, query: str = "") -> Any:
    return await client.post(
        f"/plugins/upload{query}",
        files={"file": FileStorage(io.BytesIO(data), filename="plugin.zip",
                                   content_type="application/zip")},
        headers=auth(token),
    )  # fmt: skip


async def stamped(client: Client, token: str) -> str | None:
    """Create a customer; the address the ``stamp`` plugin wrote (None: no stamp ran)."""
    response = await client.post("/customers", json={"name": "c"}, headers=auth(token))
    assert response.status_code == 201, await response.get_data(as_text=True)
    address: str | None = (await response.get_json())["address"]
    return address


TABLE_MODELS = '''
from tortoise import fields
from tortoise.models import Model


class Note(Model):
    """A note the plugin keeps about each new customer."""

    id = fields.IntField(primary_key=True)
    customer_id = fields.IntField(db_index=True)
    text = fields.CharField(max_length=200)

    class Meta:
        table = "{table}"
'''

TABLE_MIGRATION = """
from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Note",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, db_index=True)),
                ("customer_id", fields.IntField(db_index=True)),
                ("text", fields.CharField(max_length=200)),
            ],
            options={{"table": "{table}", "app": "plugin_{name}", "pk_attr": "id"}},
            bases=["Model"],
        ),
    ]
"""


def table_files(name: str, table: str | None = None) -> dict[str, str]:
    """A plugin's own table (model ``Note``, default ``<name>_note``) and its migration."""
    table = table or f"{name}_note"
    return {
        "models.py": TABLE_MODELS.format(table=table),
        "migrations/__init__.py": "",
        "migrations/0001_initial.py": TABLE_MIGRATION.format(table=table, name=name),
    }


ManifestData = dict[str, Any]

DEMO_MANIFEST: ManifestData = {
    "name": "demo",
    "version": "1.0.0",
    "description": "A plugin for the store tests",
    "hooks": ["service_provision"],
}

_CENTRAL: bytes = b"PK\x01\x02"
_END: bytes = b"PK\x05\x06"


def entry(
    name: str,
    *,
    mode: int | None = None,
    flag_bits: int = 0,
    declared_size: int = 0,
    compress_type: int = zipfile.ZIP_DEFLATED,
    create_system: int = 3,
) -> zipfile.ZipInfo:
    """A ZipInfo whose name, Unix ``mode``, flag bits and declared size survive writing.

    ``mode`` defaults to a regular file (0o644) or, for names ending in '/', a folder.
    ``declared_size`` (when not 0) replaces the true uncompressed size in the central
    directory; ``flag_bits`` are OR-ed into it (0x1: encrypted).
    """
    info = zipfile.ZipInfo("placeholder", date_time=(2024, 1, 2, 3, 4, 6))
    info.filename = info.orig_filename = name  # after __init__, which would cut at a NUL
    info.compress_type = compress_type
    info.create_system = create_system
    if mode is None:
        mode = (stat.S_IFDIR | 0o755) if name.endswith("/") else (stat.S_IFREG | 0o644)
    info.external_attr = mode << 16
    info.flag_bits = flag_bits
    info.file_size = declared_size
    return info


def make_zip(
    entries: Iterable[tuple[zipfile.ZipInfo | str, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """Write ``entries`` in order (duplicates allowed) and apply each entry's overrides."""
    overrides: list[tuple[int, int]] = []
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": exactly what some tests want
        for item, data in entries:
            info = item if isinstance(item, zipfile.ZipInfo) else entry(item)
            if isinstance(item, str):
                info.compress_type = compression
            overrides.append((info.flag_bits, info.file_size))
            archive.writestr(info, data)
    written = bytearray(buffer.getvalue())
    _patch_central_directory(written, overrides)
    return bytes(written)


def _patch_central_directory(data: bytearray, overrides: list[tuple[int, int]]) -> None:
    end = data.rfind(_END)
    (count,) = struct.unpack_from("<H", data, end + 10)
    (position,) = struct.unpack_from("<I", data, end + 16)
    for flag_bits, declared_size in overrides[:count]:
        assert data[position : position + 4] == _CENTRAL
        if flag_bits:
            (flags,) = struct.unpack_from("<H", data, position + 8)
            struct.pack_into("<H", data, position + 8, flags | flag_bits)
        if declared_size:
            struct.pack_into("<I", data, position + 24, declared_size)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
        position += 46 + name_len + extra_len + comment_len


def plugin_entries(
    prefix: str = "demo/", manifest: ManifestData | bytes | None = None
) -> list[tuple[str, bytes]]:
    """The files of a small valid plugin, under ``prefix`` ("" for the root layout)."""
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest or DEMO_MANIFEST)
    return [
        (f"{prefix}manifest.json", raw.encode() if isinstance(raw, str) else raw),
        (f"{prefix}__init__.py", b"from isp.plugins import Plugin\n\nplugin = Plugin()\n"),
        (f"{prefix}hooks/__init__.py", b""),
        (f"{prefix}hooks/provision.py", b"async def provision(service, db):\n    return None\n"),
        (f"{prefix}README.md", "# Demo\n\nUnicode is fine: caf\u00e9\n".encode()),
    ]


def demo_zip(prefix: str = "demo/", manifest: ManifestData | bytes | None = None) -> bytes:
    """:func:`plugin_entries` as a zip."""
    return make_zip(plugin_entries(prefix, manifest))


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check`` holds; fails after ``within`` seconds."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def eventually(check: Callable[[], Any], within: float = 3.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def start_server(port: int, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """``isp serve`` on ``port`` in a real process with ``env``, its output discarded."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "isp", "serve", "--port", str(port), env=dict(env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of an ``isp`` process on SQLite and a local object store; unsigned
    uploads run in process unless ``ISP_PLUGIN_UNSIGNED`` is overridden (as in
    :func:`tests.conftest.make_settings`)."""
    (tmp_path / "plugins").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ISP_DATABASE_URL": f"sqlite://{tmp_path / 'isp.sqlite3'}",
        "ISP_DATA_DIR": str(tmp_path / "data"),
        "ISP_PLUGINS_DIR": str(tmp_path / "plugins"),
        "ISP_SECRET_KEY": TEST_SECRET_KEY,
        "ISP_PLUGIN_RELOAD": "false",
        "ISP_PLUGIN_UNSIGNED": "allow",
        "ISP_LOG_LEVEL": "WARNING",
        **overrides,
    }


async def isp(*args: str, env: dict[str, str], check: bool = True) -> tuple[int, str, str]:
    """Run the ``isp`` command; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "isp", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert not check or process.returncode == 0, err.decode()
    return process.returncode or 0, out.decode(), err.decode()


async def admin_token(env: dict[str, str]) -> str:
    await isp("user", "add", "alice", "--role", "admin", env=env)
    return (await isp("token", "issue", "alice", "--scope", "admin", env=env))[1].split()[-1]


class Server:
    """A real ``isp serve`` process (Hypercorn) on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await start_server(self.port, self.env)

    async def ready(self, within: float) -> float:
        async with httpx.AsyncClient(timeout=2) as client:

            async def answers() -> bool:
                try:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            return await until(answers, within)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing runs after it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


LEDGER_HANDLERS = """
import asyncio
import json
import os
from pathlib import Path

from isp.plugins import PluginError, registry

HERE = Path({folder!r})


def note(what, obj, delivery):
    line = {{"what": what, "key": delivery.id, "attempt": delivery.attempt, "id": obj.id,
             "event": delivery.event, "pid": os.getpid()}}
    with open(HERE / "deliveries.jsonl", "a") as log:
        log.write(json.dumps(line) + "\\n")


async def deliver(obj, delivery):
    note("started", obj, delivery)
    while (HERE / "hold").exists():
        await asyncio.sleep(0.02)
    refusals = HERE / "refuse"
    if refusals.exists() and int(refusals.read_text() or 0) > 0:
        left = int(refusals.read_text()) - 1
        refusals.write_text(str(left))
        raise PluginError(f"refused ({{left}} refusals left)")
    note("done", obj, delivery)


@registry.after_commit("customer_created", timeout=120)
async def on_customer(customer, delivery):
    await deliver(customer, delivery)


@registry.after_commit("customer_updated", timeout=120)
async def on_customer_update(customer, delivery, changes):
    await deliver(customer, delivery)


@registry.after_commit("service_provision", timeout=120)
async def on_provision(service, delivery):
    await deliver(service, delivery)
"""


def ledger_files(folder: Path) -> dict[str, str]:
    """The ``ledger`` plugin: after-commit hooks on ``customer_created``,
    ``customer_updated`` and ``service_provision`` that note each delivery in
    ``folder/deliveries.jsonl`` (``started`` and ``done`` with key, attempt, object id,
    event and process id).

    The test steers it with files in ``folder``: while ``hold`` exists a delivery waits
    after ``started``; ``refuse`` holding N makes the next N attempts raise PluginError.
    """
    return plugin_files(
        "ledger",
        handlers=LEDGER_HANDLERS.format(folder=str(folder)),
        hooks=[
            {"name": "customer_created", "after_commit": True},
            {"name": "customer_updated", "after_commit": True},
            {"name": "service_provision", "after_commit": True},
        ],
    )


def ledger_notes(folder: Path) -> list[dict[str, Any]]:
    """What the ledger plugin noted so far, in order."""
    path = folder / "deliveries.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
