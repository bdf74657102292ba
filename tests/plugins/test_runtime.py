"""PluginRuntime: start with good and broken plugins, enable/disable, restart, reload."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from isp.config import Settings
from isp.db import close_db, init_db
from isp.errors import HookCrashed, HookTimeout, NotFound
from isp.plugins.models import PluginRecord
from isp.plugins.registry import PluginRegistry
from isp.plugins.runtime import PluginRuntime
from tests.plugins.conftest import Install
from tests.plugins.test_loader import BROKEN


@pytest.fixture
async def runtime(
    migrated_sqlite: Settings, app_registry: PluginRegistry
) -> AsyncIterator[PluginRuntime]:
    """A runtime over the test's plugins dir (started by each test after installing)."""
    runtime = PluginRuntime(migrated_sqlite, app_registry)
    yield runtime
    await runtime.stop()


def dummy_events() -> list[str]:
    return list(sys.modules["isp_plugins.dummy.state"].EVENTS)


def by_name(runtime: PluginRuntime) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in runtime.list()}


async def test_broken_plugins_show_error_status_while_dummy_works(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    install("dummy", *BROKEN)
    await runtime.start()

    plugins = by_name(runtime)
    assert plugins["dummy"]["status"] == "active"
    assert plugins["dummy"]["error"] is None
    for name, reason in BROKEN.items():
        assert plugins[name]["status"] == "error", name
        assert reason in plugins[name]["error"], name
        assert app_registry.entries(name) == ()
    results = await app_registry.emit("customer_created", "ada", db=None)
    assert [(r.plugin, r.value) for r in results] == [("dummy", "hello ada")]


async def test_plugin_json_has_the_documented_fields(
    install: Install, runtime: PluginRuntime
) -> None:
    install("dummy")
    await runtime.start()
    plugin = by_name(runtime)["dummy"]
    assert set(plugin) == {
        "name", "version", "description", "hooks", "enabled", "status", "error", "sha256",
        "source", "loaded_at", "reload_error", "requires", "required_by", "quarantined",
        "signature", "signer", "isolation", "permissions",
    }
    assert plugin["version"] == "1.2.0"
    assert plugin["hooks"] == ["customer_created", "service_provision"]
    assert plugin["source"] == "local"
    assert plugin["loaded_at"] is not None
    assert (plugin["signature"], plugin["signer"], plugin["isolation"]) == (
        "unsigned",
        None,
        "in_process",
    )


async def test_first_discovery_creates_enabled_local_records(
    install: Install, runtime: PluginRuntime
) -> None:
    install("dummy", "bad_version")
    await runtime.start()
    records = {r.name: r for r in await PluginRecord.all()}
    assert records["dummy"].enabled
    assert records["dummy"].source == "local"
    assert records["dummy"].version == "1.2.0"
    assert records["bad_version"].version is None


async def test_disable_stops_dispatch_without_unloading_and_enable_resumes(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    install("dummy")
    await runtime.start()

    disabled = await runtime.set_enabled("dummy", False)
    assert (disabled["status"], disabled["enabled"]) == ("disabled", False)
    assert await app_registry.emit("customer_created", "ada") == []
    assert "isp_plugins.dummy" in sys.modules

    enabled = await runtime.set_enabled("dummy", True)
    assert enabled["status"] == "active"
    assert len(await app_registry.emit("customer_created", "ada")) == 1
    assert dummy_events() == ["on_load", "on_enable", "on_disable", "on_enable"]


async def test_stop_calls_on_disable_and_on_unload_and_purges_modules(
    install: Install, runtime: PluginRuntime
) -> None:
    install("dummy")
    await runtime.start()
    state = sys.modules["isp_plugins.dummy.state"]
    await runtime.stop()
    assert state.EVENTS == ["on_load", "on_enable", "on_disable", "on_unload"]  # type: ignore[attr-defined]
    assert not [m for m in sys.modules if m.startswith("isp_plugins.dummy")]
    assert runtime.list() == []


async def test_disabled_plugin_stays_disabled_after_restart(
    install: Install, migrated: Settings, app_registry: PluginRegistry
) -> None:
    install("dummy")
    first = PluginRuntime(migrated, app_registry)
    await first.start()
    await first.set_enabled("dummy", False)
    await first.stop()
    await close_db()

    await init_db(migrated)
    second = PluginRuntime(migrated, app_registry)
    await second.start()
    try:
        assert by_name(second)["dummy"]["status"] == "disabled"
        assert await app_registry.emit("customer_created", "ada") == []
        assert dummy_events() == ["on_load"]  # the new process never enabled it
        assert (await PluginRecord.get(name="dummy")).enabled is False
    finally:
        await second.stop()


async def test_describe_reports_stats_per_hook(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    install("dummy")
    await runtime.start()
    await app_registry.emit("customer_created", "ada")
    await app_registry.emit("customer_created", "bob")

    stats = {s["hook"]: s for s in runtime.describe("dummy")["stats"]}
    greet, provision = stats["handlers.greet"], stats["handlers.provision"]
    assert (greet["event"], provision["event"]) == ("customer_created", "service_provision")
    assert greet["function"] == "handlers.greet"
    assert greet["calls"] == 2
    assert greet["failures"] == 0
    assert greet["p50_ms"] is not None
    assert provision["calls"] == 0
    assert provision["timeout"] == 1.5
    assert greet["timeout"] == 5  # ISP_HOOK_TIMEOUT of the settings


async def test_unknown_plugin_is_not_found(runtime: PluginRuntime) -> None:
    await runtime.start()
    with pytest.raises(NotFound):
        runtime.describe("ghost")
    with pytest.raises(NotFound):
        await runtime.set_enabled("ghost", False)


async def test_slow_and_crashing_plugins_fail_the_emit_naming_plugin_and_hook(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    install("slow_hook")
    await runtime.start()
    with pytest.raises(HookTimeout) as timeout:
        await app_registry.emit("service_provision", "svc")
    named = {key: timeout.value.extra[key] for key in ("plugin", "hook", "event", "function")}
    assert named == {
        "plugin": "slow_hook",
        "hook": "handlers.provision",
        "event": "service_provision",
        "function": "handlers.provision",
    }

    install("crashing_hook")
    await runtime.load_plugin("crashing_hook")
    await runtime.set_enabled("slow_hook", False)
    with pytest.raises(HookCrashed) as crashed:
        await app_registry.emit("service_provision", "svc")
    assert crashed.value.extra["plugin"] == "crashing_hook"
    assert "ZeroDivisionError" in crashed.value.detail
    stats = runtime.describe("slow_hook")["stats"][0]
    assert (stats["calls"], stats["timeouts"]) == (1, 1)


async def test_reload_keeps_old_version_when_new_code_fails(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    folder = install("dummy")
    await runtime.start()
    (folder / "handlers.py").write_text("def broken(:\n")

    described = await runtime.load_plugin("dummy")

    assert described["status"] == "active"
    assert "plugins/dummy/handlers.py:1: import failed: SyntaxError" in described["reload_error"]
    results = await app_registry.emit("customer_created", "ada")
    assert results[0].value == "hello ada"  # the old code still serves
    assert "isp_plugins.dummy.handlers" in sys.modules  # and its modules are back


async def test_reload_swaps_in_the_new_version(
    install: Install, runtime: PluginRuntime, app_registry: PluginRegistry
) -> None:
    folder = install("dummy")
    await runtime.start()
    old_state = sys.modules["isp_plugins.dummy.state"]
    handlers = folder / "handlers.py"
    handlers.write_text(handlers.read_text().replace('f"hello {', 'f"hi again {'))
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace("1.2.0", "1.3.0"))

    described = await runtime.load_plugin("dummy")

    assert (described["version"], described["reload_error"]) == ("1.3.0", None)
    results = await app_registry.emit("customer_created", "ada")
    assert results[0].value == "hi again ada"
    assert old_state.EVENTS[-2:] == ["on_disable", "on_unload"]  # type: ignore[attr-defined]
    assert dummy_events() == ["on_load", "on_enable"]
    assert (await PluginRecord.get(name="dummy")).version == "1.3.0"


async def test_missing_plugins_dir_starts_with_no_plugins(
    migrated_sqlite: Settings, app_registry: PluginRegistry, tmp_path: Path
) -> None:
    settings = migrated_sqlite.model_copy(update={"plugins_dir": tmp_path / "absent"})
    runtime = PluginRuntime(settings, app_registry)
    await runtime.start()
    assert runtime.list() == []
    await runtime.stop()
