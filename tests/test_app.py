"""``create_app`` builds what belongs to the app: two apps in one process do not share."""

from __future__ import annotations

from pathlib import Path

from isp.app import create_app
from isp.plugins import registry
from isp.plugins.runtime import PluginRuntime
from isp.plugins.settings import SettingsStore, settings_store
from tests.conftest import auth, make_settings
from tests.plugins.builders import plugin_files, write_plugin


def _registry_of(app: object) -> object:
    runtime = app.extensions["isp.plugins"]  # type: ignore[attr-defined]
    assert isinstance(runtime, PluginRuntime)
    return runtime.registry


def test_two_apps_in_one_process_have_their_own_plugin_registries(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'isp.sqlite3'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = create_app(make_settings(url, tmp_path / "a", hook_timeout=3))
    second = create_app(make_settings(url, tmp_path / "b", hook_timeout=4))

    assert _registry_of(first) is not _registry_of(second)
    assert registry.current() not in (_registry_of(first), _registry_of(second))
    assert (_registry_of(first).default_timeout, _registry_of(second).default_timeout) == (3, 4)


async def test_the_core_emits_through_the_registry_of_the_app_serving_the_request(
    tmp_path: Path,
) -> None:
    from quart import current_app

    app = create_app(make_settings(f"sqlite://{tmp_path / 'isp.sqlite3'}", tmp_path))

    @app.get("/which-registry")
    async def which() -> dict[str, bool]:
        return {"own": registry.current() is _registry_of(current_app)}

    async with app.test_app():
        response = await app.test_client().get("/which-registry")
        assert await response.get_json() == {"own": True}


def _settings_store_of(app: object) -> SettingsStore:
    runtime = app.extensions["isp.plugins"]  # type: ignore[attr-defined]
    assert isinstance(runtime, PluginRuntime)
    return runtime.settings_store


TUNER = """
from pydantic import BaseModel
from isp.plugins import Plugin

class TunerSettings(BaseModel):
    retries: int = 3

plugin = Plugin(settings=TunerSettings)
"""

TUNER_HANDLERS = """
from isp.plugins import registry
from . import plugin

@registry.hook("customer_created")
async def note_retries(customer, db):
    customer.address = str(plugin.settings.retries)
    await customer.save(using_db=db, update_fields=["address"])
"""


async def test_two_apps_in_one_process_have_their_own_plugin_settings(tmp_path: Path) -> None:
    """Each app's copy of ``tuner`` reads its own app's settings store: a settings change
    through one app reaches its plugin and not the other app's (one Tortoise database per
    process, so the second app's runtime runs inside the first app's lifetime)."""
    from quart import current_app
    from tortoise import connections

    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token
    from isp.core.models import Customer

    url = f"sqlite://{tmp_path / 'isp.sqlite3'}"
    apps = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        app_settings = make_settings(url, tmp_path / name)
        files = plugin_files(
            "tuner", init=TUNER, handlers=TUNER_HANDLERS, hooks=["customer_created"]
        )
        write_plugin(app_settings.plugins_dir, "tuner", files)
        apps.append(create_app(app_settings))
    first, second = apps
    assert _settings_store_of(first) is not _settings_store_of(second)
    assert settings_store.current() not in (_settings_store_of(first), _settings_store_of(second))

    @first.get("/which-settings")
    async def which() -> dict[str, bool]:
        return {"own": settings_store.current() is _settings_store_of(current_app)}

    async def seen_by_second() -> str | None:
        customer = await Customer.create(name="Bo")
        await _registry_of(second).emit(  # type: ignore[attr-defined]
            "customer_created", customer, db=connections.get("default")
        )
        return customer.address

    async with first.test_app():
        client = first.test_client()
        await add_user("alice", ["admin"])
        token = await issue_token("alice", ["admin"])
        assert await (await client.get("/which-settings")).get_json() == {"own": True}
        second_runtime = second.extensions["isp.plugins"]
        await second_runtime.start()
        try:
            assert await seen_by_second() == "3"
            response = await client.put(
                "/plugins/tuner/settings", json={"retries": 9}, headers=auth(token)
            )
            assert response.status_code == 200, await response.get_data(as_text=True)
            created = await client.post("/customers", json={"name": "Ada"}, headers=auth(token))
            assert (await created.get_json())["address"] == "9"
            assert await seen_by_second() == "3"
            retries = [_settings_store_of(app).current("tuner").retries for app in apps]  # type: ignore[union-attr]
            assert retries == [9, 3]
        finally:
            await second_runtime.stop()
