"""Plugins that depend on plugins: order, unmet ranges, cycles, cascades, upgrades."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from isp.plugins.dependencies import find_cycle, load_waves
from tests.conftest import Tokens, auth
from tests.plugins import builders
from tests.plugins.builders import stamp_files, upload

# The dependant checks at import time that its dependency is already loaded.
NEEDS_BASE = """
import sys
from isp.plugins import Plugin

assert "isp_plugins.base" in sys.modules, "base must be loaded before addon"
plugin = Plugin()
"""


def write(root: Path, name: str, version: str, **manifest: Any) -> None:
    folder = builders.write_plugin(root, name, stamp_files(name, version, **manifest))
    if "base" in manifest.get("requires", {}):
        (folder / "__init__.py").write_text(NEEDS_BASE)


def zipped(name: str, version: str, **manifest: Any) -> bytes:
    return builders.zip_of(name, stamp_files(name, version, **manifest))


async def plugins(client: Client, token: str) -> dict[str, dict[str, Any]]:
    listed = await (await client.get("/plugins", headers=auth(token))).get_json()
    return {p["name"]: p for p in listed["plugins"]}


def test_load_waves_put_dependencies_first_and_refuse_cycles() -> None:
    requires = {
        "addon": {"base": ">=1"},
        "base": {},
        "extra": {"addon": ">=1"},
        "alone": {},
        "orphan": {"missing": ">=1"},
        "x": {"y": "1"},
        "y": {"x": "1"},
    }
    waves, refused = load_waves(requires)
    assert waves == [["alone", "base", "orphan"], ["addon"], ["extra"]]
    assert refused == {"x": "dependency cycle: x -> y -> x", "y": "dependency cycle: x -> y -> x"}
    assert find_cycle({"a": {"b": "1"}, "b": {"c": "1"}, "c": {"a": "1"}}) == ["a", "b", "c", "a"]


@pytest.fixture
def layout(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    for name, version, requires in request.param:
        write(settings.plugins_dir, name, version, requires=requires)
    return settings


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        pytest.param(
            [("addon", "1.0.0", {"base": ">=1.0,<2"}), ("base", "1.2.0", {})],
            {"addon": None, "base": None},
            id="dependency-order",
        ),
        pytest.param(
            [("addon", "1.0.0", {"base": ">=1.0,<2"})],
            {"addon": "addon requires base >=1.0,<2, which is not installed"},
            id="missing",
        ),
        pytest.param(
            [("addon", "1.0.0", {"base": ">=1.0,<2"}), ("base", "2.0.0", {})],
            {"addon": "addon requires base >=1.0,<2, but base 2.0.0 is installed", "base": None},
            id="out-of-range",
        ),
        pytest.param(
            [("ping", "1.0.0", {"pong": ">=1"}), ("pong", "1.0.0", {"ping": ">=1"})],
            {
                "ping": "dependency cycle: ping -> pong -> ping",
                "pong": "dependency cycle: ping -> pong -> ping",
            },  # fmt: skip
            id="cycle",
        ),
    ],
    indirect=["layout"],
)
async def test_start_loads_in_dependency_order_and_names_unmet_requirements(
    layout: Settings, expected: dict[str, str | None], tokens: Tokens, client: Client
) -> None:
    found = await plugins(client, tokens.admin)
    for name, error in expected.items():
        assert found[name]["error"] == error
        assert found[name]["status"] == ("active" if error is None else "error")


@pytest.mark.parametrize(
    "layout", [[("addon", "1.0.0", {"base": ">=1.0,<2"}), ("base", "1.2.0", {})]], indirect=True
)
async def test_disable_with_dependants_is_refused_unless_cascade(
    layout: Settings, tokens: Tokens, client: Client
) -> None:
    found = await plugins(client, tokens.admin)
    assert found["addon"]["requires"] == {"base": ">=1.0,<2"}
    assert found["base"]["required_by"] == ["addon"]
    refused = await client.put("/plugins/base/disable", headers=auth(tokens.admin))
    assert refused.status_code == 409
    problem = await refused.get_json()
    assert problem["dependants"] == ["addon"]
    assert "cascade" in problem["detail"]
    assert (await plugins(client, tokens.admin))["base"]["status"] == "active"
    deleted = await client.delete("/plugins/base", headers=auth(tokens.admin))
    assert deleted.status_code == 409

    cascaded = await client.put("/plugins/base/disable?cascade=true", headers=auth(tokens.admin))
    assert cascaded.status_code == 200
    found = await plugins(client, tokens.admin)
    assert (found["base"]["status"], found["addon"]["status"]) == ("disabled", "disabled")

    enable_addon = await client.put("/plugins/addon/enable", headers=auth(tokens.admin))
    assert enable_addon.status_code == 409
    assert "base" in (await enable_addon.get_json())["detail"]
    assert (await client.put("/plugins/base/enable", headers=auth(tokens.admin))).status_code == 200
    assert (
        await client.put("/plugins/addon/enable", headers=auth(tokens.admin))
    ).status_code == 200


async def test_install_with_missing_or_out_of_range_dependency_is_409(
    app: Quart, tokens: Tokens, client: Client, settings: Settings
) -> None:
    addon = zipped("addon", "1.0.0", requires={"base": ">=1.0,<2"})
    missing = await upload(client, tokens.admin, addon)
    assert missing.status_code == 409
    assert "base >=1.0,<2, which is not installed" in (await missing.get_json())["detail"]
    assert not (settings.plugins_dir / "addon").exists()

    assert (await upload(client, tokens.admin, zipped("base", "0.9.0"))).status_code == 201
    too_old = await upload(client, tokens.admin, addon)
    assert too_old.status_code == 409
    assert "but base 0.9.0 is installed" in (await too_old.get_json())["detail"]

    assert (await upload(client, tokens.admin, zipped("base", "1.5.0"))).status_code == 200
    assert (await upload(client, tokens.admin, addon)).status_code == 201

    breaking = await upload(client, tokens.admin, zipped("base", "2.0.0"))
    assert breaking.status_code == 409
    problem = await breaking.get_json()
    assert problem["dependants"] == ["addon"]
    assert "addon requires base >=1.0,<2" in problem["detail"]
    assert (await plugins(client, tokens.admin))["base"]["version"] == "1.5.0"

    cyclic = await upload(client, tokens.admin, zipped("base", "1.6.0", requires={"addon": ">=1"}))
    assert cyclic.status_code == 409
    assert "dependency cycle: base -> addon -> base" in (await cyclic.get_json())["detail"]


async def test_uninstall_cascade_disables_dependants_first(
    app: Quart, tokens: Tokens, client: Client
) -> None:
    await upload(client, tokens.admin, zipped("base", "1.0.0"))
    await upload(client, tokens.admin, zipped("addon", "1.0.0", requires={"base": ">=1"}))
    gone = await client.delete("/plugins/base?cascade=true", headers=auth(tokens.admin))
    assert gone.status_code == 204
    found = await plugins(client, tokens.admin)
    assert "base" not in found
    assert found["addon"]["enabled"] is False


def test_manifest_requires_must_be_specifiers(tmp_path: Path) -> None:
    from isp.errors import PluginInvalid
    from isp.plugins.manifest import read_manifest

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "name": "bad",
                "version": "1.0.0",
                "description": "",
                "requires": {"base": "about one"},
            }
        )  # fmt: skip
    )
    with pytest.raises(PluginInvalid, match="requires"):
        read_manifest(folder)
