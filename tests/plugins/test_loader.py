"""The loader: namespaced import, staging, validation against the manifest, unload."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import sys
from pathlib import Path

import pytest

from isp.errors import PluginInvalid
from isp.plugins import registry as app_singleton
from isp.plugins.discovery import describe, discover
from isp.plugins.loader import detach, load
from isp.plugins.registry import PluginRegistry
from tests.plugins.conftest import Install

BROKEN = {
    "bad_json": "plugins/bad_json/manifest.json: invalid JSON at line 5",
    "missing_field": "plugins/missing_field/manifest.json: version: missing",
    "bad_version": "plugins/bad_version/manifest.json: version: 'x' is not a semantic version",
    "import_error": "plugins/import_error/handlers.py:3: import failed: ModuleNotFoundError",
    "undeclared_hook": "handlers.suspend is registered for 'service_suspend' but manifest.json "
    "does not declare it",
    "missing_hook": "hooks: declares 'service_resume' but no function is registered for it",
    "unknown_event": "hooks: 'router_exploded' is not a known event",
    "incompatible_isp": "requires_isp: the plugin needs ISP >=99.0 but this is ISP 0.1.0",
    "no_plugin_object": "plugins/no_plugin_object/__init__.py: must expose `plugin = Plugin()`",
}


def test_dummy_plugin_loads_under_its_own_namespace(
    install: Install, app_registry: PluginRegistry
) -> None:
    path_before = list(sys.path)
    loaded = load(describe(install("dummy")), app_registry.events)

    assert loaded.plugin.name == "dummy"
    assert loaded.plugin.version == "1.2.0"
    assert set(loaded.modules) == {
        "isp_plugins.dummy", "isp_plugins.dummy.handlers", "isp_plugins.dummy.state"
    }
    assert sys.modules["isp_plugins.dummy"].plugin is loaded.plugin  # type: ignore[attr-defined]
    assert [(e.hook, e.event, e.function) for e in loaded.entries] == [
        ("handlers.greet", "customer_created", "handlers.greet"),
        ("handlers.provision", "service_provision", "handlers.provision"),
    ]
    assert sys.path == path_before
    detach("dummy")


def test_hook_timeouts_resolve_decorator_then_manifest_then_default(
    install: Install, app_registry: PluginRegistry
) -> None:
    loaded = load(describe(install("dummy")), app_registry.events)
    app_registry.publish("dummy", loaded.entries)
    app_registry.configure(default_timeout=7)
    timeouts = {e.event: app_registry.timeout_of(e) for e in app_registry.entries("dummy")}
    # service_provision: decorator 1.5 beats manifest 2; customer_created: the default
    assert timeouts == {"service_provision": 1.5, "customer_created": 7}


async def test_published_plugin_hooks_are_called(
    install: Install, app_registry: PluginRegistry
) -> None:
    loaded = load(describe(install("dummy")), app_registry.events)
    app_registry.publish("dummy", loaded.entries)
    results = await app_registry.emit("customer_created", "ada", db=None)
    assert [(r.plugin, r.value) for r in results] == [("dummy", "hello ada")]
    sync_results = await app_registry.emit("service_provision", 7, db=None)
    assert sync_results[0].value == {"provisioned": 7}


def test_unload_leaves_nothing_in_sys_modules(
    install: Install, app_registry: PluginRegistry
) -> None:
    load(describe(install("dummy")), app_registry.events)
    detach("dummy")
    assert not [m for m in sys.modules if m.startswith("isp_plugins.dummy")]


async def test_no_bytecode_is_written_and_stale_bytecode_is_never_read(
    install: Install, app_registry: PluginRegistry
) -> None:
    folder = install("dummy")
    handlers = folder / "handlers.py"
    load(describe(folder), app_registry.events)
    assert not list(folder.rglob("*.pyc"))
    detach("dummy")

    # A .pyc left by someone else's import, then an edit keeping size and mtime:
    # exactly the case where the standard loader would run the old code.
    py_compile.compile(str(handlers), cfile=importlib.util.cache_from_source(str(handlers)))
    stat = handlers.stat()
    handlers.write_text(handlers.read_text().replace('f"hello {', 'f"HOWDY {'))
    assert handlers.stat().st_size == stat.st_size
    os.utime(handlers, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    loaded = load(describe(folder), app_registry.events)
    assert await loaded.entries[0].func("ada") == "HOWDY ada"
    detach("dummy")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_plugin_is_refused_with_a_reason_naming_the_problem(
    name: str, install: Install, app_registry: PluginRegistry
) -> None:
    with pytest.raises(PluginInvalid) as caught:
        load(describe(install(name)), app_registry.events)
    assert BROKEN[name] in caught.value.detail
    assert caught.value.extra["plugin"] == name
    assert not [m for m in sys.modules if m.startswith(f"isp_plugins.{name}")]


def test_incompatible_plugin_code_never_runs(
    install: Install, app_registry: PluginRegistry
) -> None:
    # its handlers.py raises at import: the manifest check must come first
    with pytest.raises(PluginInvalid, match="requires_isp"):
        load(describe(install("incompatible_isp")), app_registry.events)


def test_events_declared_in_a_manifest_can_be_hooked(
    install: Install, app_registry: PluginRegistry, plugins_dir: Path
) -> None:
    folder = install("unknown_event")
    manifest = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(
        manifest.replace('"hooks"', '"events": ["router_exploded"], "hooks"')
    )
    loaded = load(describe(folder), app_registry.events)
    assert loaded.manifest.events == ("router_exploded",)
    detach("unknown_event")


def test_discovery_skips_hidden_and_private_folders(plugins_dir: Path, install: Install) -> None:
    install("dummy")
    for name in (".staging-dummy-1234", "_disabled", "__pycache__"):
        (plugins_dir / name).mkdir()
    (plugins_dir / "README.txt").write_text("not a plugin")
    assert [s.name for s in discover(plugins_dir)] == ["dummy"]


def test_discovery_of_a_missing_plugins_dir_finds_nothing(tmp_path: Path) -> None:
    assert discover(tmp_path / "nowhere") == []


def test_hook_outside_a_plugin_import_on_the_app_registry_is_refused() -> None:
    with pytest.raises(RuntimeError, match="outside a plugin import"):

        @app_singleton.hook("customer_created")
        async def stray(customer: object, db: object = None) -> None:
            return None


def test_app_registry_refuses_ad_hoc_owners_too() -> None:
    with pytest.raises(RuntimeError, match="outside a plugin import"):
        app_singleton.hook("customer_created", plugin="sneaky")(lambda customer, db=None: None)
