"""A manifest's ``vendors`` and the registry's answer to "who drives vendor V for event E"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from isp.errors import PluginInvalid
from isp.plugins.hooks import HookEntry, registration
from isp.plugins.manifest import read_manifest
from isp.plugins.registry import PluginRegistry
from isp.testing import load_plugin

DUMMY = Path(__file__).resolve().parents[1] / "fixtures" / "plugins" / "dummy"

MANIFEST: dict[str, Any] = {
    "name": "routers",
    "version": "1.0.0",
    "description": "drives routers",
    "hooks": ["service_provision"],
}


def manifest_folder(tmp_path: Path, data: dict[str, Any]) -> Path:
    folder = tmp_path / "plugins" / "routers"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def test_vendors_are_read_from_the_manifest(tmp_path: Path) -> None:
    manifest = read_manifest(manifest_folder(tmp_path, MANIFEST | {"vendors": ["mikrotik"]}))
    assert manifest.vendors == ("mikrotik",)


def test_a_manifest_without_vendors_drives_no_router(tmp_path: Path) -> None:
    assert read_manifest(manifest_folder(tmp_path, MANIFEST)).vendors == ()


@pytest.mark.parametrize(
    ("vendors", "expected"),
    [
        (["cisco"], "vendors: 'cisco' is not a known vendor; known: mikrotik"),
        (["mikrotik", "mikrotik"], "vendors: a vendor is listed twice"),
        ("mikrotik", "vendors: Input should be a valid tuple"),
    ],
)
def test_bad_vendors_are_refused_naming_the_field(
    tmp_path: Path, vendors: object, expected: str
) -> None:
    with pytest.raises(PluginInvalid) as caught:
        read_manifest(manifest_folder(tmp_path, MANIFEST | {"vendors": vendors}))
    assert caught.value.detail == f"plugins/routers/manifest.json: {expected}"
    assert caught.value.extra["errors"][0]["loc"][:2] == ["manifest.json", "vendors"]


def entry(plugin: str, event: str) -> HookEntry:
    async def hook(obj: object, db: object = None) -> None:
        return None

    return HookEntry(plugin, registration(event, hook, None), timeout=None, critical=True)


@pytest.fixture
def registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.declare_events({"service_provision", "service_suspend"})
    return registry


def test_drivers_are_the_enabled_plugins_hooking_the_event_for_the_vendor(
    registry: PluginRegistry,
) -> None:
    registry.publish("b_router", [entry("b_router", "service_provision")], vendors=["mikrotik"])
    registry.publish("a_router", [entry("a_router", "service_provision")], vendors=["mikrotik"])
    registry.publish("texts", [entry("texts", "service_provision")])
    registry.publish("other", [entry("other", "service_suspend")], vendors=["mikrotik"])

    assert registry.drivers("service_provision", "mikrotik") == ("a_router", "b_router")
    assert registry.drivers("service_suspend", "mikrotik") == ("other",)
    assert registry.drivers("service_provision", "cisco") == ()


def test_drivers_follow_enable_disable_replace_and_withdraw(registry: PluginRegistry) -> None:
    registry.publish("router", [entry("router", "service_provision")], vendors=["mikrotik"])
    registry.set_enabled("router", False)
    assert registry.drivers("service_provision", "mikrotik") == ()
    registry.set_enabled("router", True)  # the vendors survive a disable
    assert registry.drivers("service_provision", "mikrotik") == ("router",)
    registry.publish("router", [entry("router", "service_provision")])  # a new version
    assert registry.drivers("service_provision", "mikrotik") == ()
    registry.publish("router", [entry("router", "service_provision")], vendors=["mikrotik"])
    registry.withdraw("router")
    assert registry.drivers("service_provision", "mikrotik") == ()


def test_load_plugin_publishes_the_manifests_vendors(
    plugin_registry: PluginRegistry, tmp_path: Path
) -> None:
    folder = tmp_path / "dummy"
    shutil.copytree(DUMMY, folder)
    load_plugin(plugin_registry, folder)
    assert plugin_registry.drivers("service_provision", "mikrotik") == ("dummy",)
    assert plugin_registry.drivers("customer_created", "mikrotik") == ("dummy",)
