"""Real servers killed and restarted: interrupted upgrades undone, slow imports abandoned,
uninstall with the service stopped."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.plugins.builders import (
    Server,
    admin_token,
    isp,
    plugin_files,
    server_env,
    table_files,
    until,
    write_plugin,
    zip_of,
)

STAMP = """
from isp.plugins import registry

@registry.hook("customer_created")
async def stamp(customer, db):
    customer.address = "stamp-{version}"
    await customer.save(using_db=db, update_fields=["address"])
"""

# Imported in the server (not in the validating child), it says so and hangs: the
# moment to kill the server in the middle of an upgrade, folder already promoted.
HANGING_INIT = """
import sys, time
from isp.plugins import Plugin
if not sys.argv[0].endswith("candidate.py"):
    open({marker!r}, "w").close()
    time.sleep(60)
plugin = Plugin()
"""


def schema(database: Path) -> tuple[list[str], list[str]]:
    """The plugin's tables and its applied migrations, read from the SQLite file."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'stamp_%'"
        ).fetchall()
        applied = conn.execute(
            "SELECT name FROM tortoise_migrations WHERE app = 'plugin_stamp'"
        ).fetchall()
    return [t[0] for t in tables], [m[0] for m in applied]


def stamp(version: str, init: str | None = None) -> dict[str, str]:
    files = plugin_files(
        "stamp", version, handlers=STAMP.format(version=version), hooks=["customer_created"]
    )
    return files if init is None else {**files, "__init__.py": init}


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()


async def serve(servers: list[Server], env: dict[str, str]) -> Server:
    server = Server(env)
    servers.append(server)
    await server.start()
    return server


async def test_kill_in_the_middle_of_an_upgrade_restarts_clean_on_the_old_version_and_schema(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = server_env(tmp_path, ISP_PLUGIN_IMPORT_TIMEOUT="30")
    token = await admin_token(env)
    headers = {"Authorization": f"Bearer {token}"}
    plugins_dir = tmp_path / "plugins"
    marker = tmp_path / "importing"
    first = await serve(servers, env)
    await first.ready(within=30)
    async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=60) as client:
        files = {"file": ("s.zip", zip_of("stamp", stamp("1.0.0")), "application/zip")}
        assert (await client.post("/plugins/upload", files=files)).status_code == 201
        hanging = stamp("1.1.0", HANGING_INIT.format(marker=str(marker)))
        # with a table of its own: its migration runs before the import hangs
        upgrade = zip_of("stamp", {**hanging, **table_files("stamp")})
        files = {"file": ("s.zip", upgrade, "application/zip")}
        pending = asyncio.create_task(client.post("/plugins/upload", files=files))

        async def importing() -> bool:
            return marker.exists()

        await until(importing, within=30)
        assert schema(tmp_path / "isp.sqlite3") == (["stamp_note"], ["0001_initial"])
        first.kill()
        with contextlib.suppress(httpx.TransportError):
            await pending
    # the kill left the upgrade half done: new folder promoted, old one aside, a journal
    leftovers = sorted(p.name for p in plugins_dir.iterdir() if p.name.startswith("."))
    assert any(n.startswith(".old-stamp-") for n in leftovers), leftovers
    assert any(n.startswith(".intent-stamp") for n in leftovers), leftovers

    second = await serve(servers, env)
    await second.ready(within=30)
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=10) as client:
        described = (await client.get("/plugins/stamp")).json()
        assert (described["version"], described["status"]) == ("1.0.0", "active")
        created = await client.post("/customers", json={"name": "c"})
        assert created.json()["address"] == "stamp-1.0.0"
        audit = (await client.get("/audit")).json()["entries"]
        assert (audit[0]["action"], audit[0]["to_version"], audit[0]["detail"]["outcome"]) == (
            "upgrade", "1.1.0", "interrupted",
        )  # fmt: skip
        assert "could not be undone" not in audit[0]["detail"]["reason"]
    assert schema(tmp_path / "isp.sqlite3") == ([], [])  # its migration was undone too
    assert sorted(p.name for p in plugins_dir.iterdir()) == ["stamp"]
    assert "stamp-1.0.0" in (plugins_dir / "stamp" / "handlers.py").read_text()
    stored = sorted(p.parent.name for p in (tmp_path / "data" / "objects").rglob("*.zip"))
    assert stored == ["1.0.0"]  # the upgrade's zip went with it


async def test_restart_with_two_plugins_whose_imports_sleep_serves_within_15_s(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = server_env(tmp_path)  # the default ISP_PLUGIN_IMPORT_TIMEOUT: 10 s
    token = await admin_token(env)
    plugins_dir = tmp_path / "plugins"
    for name in ("slow", "stuck"):  # imported one after the other, they would take 20 s
        hang = "import time\ntime.sleep(60)\nfrom isp.plugins import Plugin\nplugin = Plugin()\n"
        write_plugin(plugins_dir, name, plugin_files(name, init=hang))
    write_plugin(plugins_dir, "stamp", stamp("1.0.0"))
    write_plugin(plugins_dir, "addon", plugin_files("addon", requires={"stamp": ">=1.0"}))
    write_plugin(plugins_dir, "after_slow", plugin_files("after_slow", requires={"slow": ">=1.0"}))

    started = time.monotonic()
    server = await serve(servers, env)
    await server.ready(within=15)
    assert time.monotonic() - started < 15
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        plugins = (await client.get("/plugins")).json()["plugins"]
        listed: dict[str, Any] = {p["name"]: p for p in plugins}
        for name in ("slow", "stuck"):
            assert listed[name]["status"] == "error"
            assert "did not finish importing within 10 s" in listed[name]["error"]
        assert listed["after_slow"]["status"] == "error"  # loaded after what it requires
        assert "slow" in listed["after_slow"]["error"]
        assert (listed["stamp"]["status"], listed["addon"]["status"]) == ("active", "active")
        created = await client.post("/customers", json={"name": "c"})
        assert created.json()["address"] == "stamp-1.0.0"


async def test_uninstall_works_with_the_service_stopped_and_runs_no_plugin_code(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = server_env(tmp_path)
    await admin_token(env)
    archive = tmp_path / "stamp.zip"
    archive.write_bytes(zip_of("stamp", stamp("1.0.0")))
    _, out, _ = await isp("plugins", "install", str(archive), env=env)
    assert out.splitlines()[0] == "installed stamp 1.0.0"
    archive.write_bytes(zip_of("stamp", stamp("1.1.0")))
    _, out, _ = await isp("plugins", "install", str(archive), env=env)
    assert out.splitlines()[0] == "upgraded stamp 1.0.0 -> 1.1.0"
    older = tmp_path / "older.zip"
    older.write_bytes(zip_of("stamp", stamp("1.0.0")))
    status, _, err = await isp("plugins", "install", str(older), env=env, check=False)
    assert status != 0
    assert "--force" in err
    assert "?force=true" not in err
    # a plugin whose import hangs would stop a command that imports plugins; it says
    # when it is imported
    imported = tmp_path / "slow-imported"
    slow = (
        f"import time\nopen({str(imported)!r}, 'w').close()\ntime.sleep(60)\n"
        "from isp.plugins import Plugin\nplugin = Plugin()\n"
    )
    write_plugin(tmp_path / "plugins", "slow", plugin_files("slow", init=slow))

    _, out, _ = await isp("plugins", "uninstall", "stamp", env=env)
    assert out.startswith("uninstalled stamp 1.1.0")
    assert not imported.exists()  # no plugin code ran
    assert not (tmp_path / "plugins" / "stamp").exists()

    status, _, err = await isp("plugins", "uninstall", "slow", env=env, check=False)
    assert status != 0
    assert "local plugin" in err
    assert (tmp_path / "plugins" / "slow").is_dir()
    assert not imported.exists()


async def test_cli_list_and_the_running_server_agree_on_every_plugins_state(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = server_env(tmp_path)
    token = await admin_token(env)
    plugins_dir = tmp_path / "plugins"
    write_plugin(plugins_dir, "stamp", stamp("1.0.0"))
    write_plugin(plugins_dir, "quiet", plugin_files("quiet"))
    write_plugin(plugins_dir, "broken", {**plugin_files("broken"), "__init__.py": "import nope\n"})
    server = await serve(servers, env)
    await server.ready(within=30)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        assert (await client.put("/plugins/quiet/disable")).status_code == 200
        served = {
            p["name"]: (p["version"], p["status"], p["source"])
            for p in (await client.get("/plugins")).json()["plugins"]
        }
    _, out, _ = await isp("plugins", "list", env=env)
    listed = {line.split()[0]: tuple(line.split()[1:4]) for line in out.splitlines()}
    assert listed == served
    assert served == {
        "broken": ("1.0.0", "error", "local"),
        "quiet": ("1.0.0", "disabled", "local"),
        "stamp": ("1.0.0", "active", "local"),
    }


async def test_start_removes_staging_leftovers_and_undoes_an_install_that_never_committed(
    tmp_path: Path,
) -> None:
    import json

    from isp.app import create_app
    from isp.plugins.archive import tree_digest
    from tests.conftest import make_settings

    settings = make_settings(f"sqlite://{tmp_path / 'isp.sqlite3'}", tmp_path)
    plugins_dir = settings.plugins_dir
    write_plugin(plugins_dir / ".staging-abc123", "stamp", stamp("1.0.0"))
    (plugins_dir / ".removing-stamp-1234").mkdir()
    half = write_plugin(plugins_dir, "fresh", plugin_files("fresh"))  # promoted, not recorded
    (plugins_dir / ".intent-fresh.json").write_text(json.dumps({
        "name": "fresh", "action": "install", "actor": "alice", "sha256": "0" * 64,
        "tree_sha256": tree_digest(half), "from_version": None, "to_version": "1.0.0",
        "backup": ".old-fresh-0000", "object_key": f"fresh/1.0.0/{'0' * 64}.zip",
        "object_existed": False,
    }))  # fmt: skip
    write_plugin(plugins_dir, "stamp", stamp("1.0.0"))  # a local plugin, untouched

    app = create_app(settings)
    async with app.test_app():
        runtime = app.extensions["isp.plugins"]
        assert runtime.names() == ["stamp"]
        from isp.audit import AuditEntry

        entry = await AuditEntry.filter(plugin="fresh").first()
        assert entry is not None
        assert (entry.action, entry.detail["outcome"]) == ("install", "interrupted")
    assert sorted(p.name for p in plugins_dir.iterdir()) == ["stamp"]
