"""Plugin settings over HTTP, on SQLite and PostgreSQL.

``tuner`` declares a settings model (a str, a bounded int, a secret) and a
``customer_created`` hook that writes the values it sees into the customer's ``address``,
so each test reads over HTTP what the hook saw. ``plain`` declares no settings.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.app import create_app
from isp.config import Settings
from isp.plugins import Plugin
from isp.plugins.settings import MASK, SettingsStore
from tests.conftest import Tokens, auth
from tests.plugins import builders
from tests.plugins.builders import plugin_files

NAME = "tuner"
SECRET = "s3cr3t-Value-never-shown"

INIT = """
from typing import Annotated
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from isp.plugins import Plugin

class TunerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    greeting: str = "hello"
    retries: Annotated[int, Field(ge=1, le=10)] = 3
    api_key: SecretStr | None = None

plugin = Plugin(settings=TunerSettings)
"""

HANDLERS = """
from isp.plugins import registry
from . import plugin

@registry.hook("customer_created")
async def note_settings(customer, db):
    seen = plugin.settings
    key = seen.api_key.get_secret_value() if seen.api_key is not None else "-"
    customer.address = f"{seen.greeting}|{seen.retries}|{key}"
    await customer.save(using_db=db, update_fields=["address"])
"""


def write_plugin(root: Path, name: str, init: str, handlers: str | None = None) -> None:
    files = plugin_files(
        name,
        init=textwrap.dedent(init),
        handlers=None if handlers is None else textwrap.dedent(handlers),
        hooks=[] if handlers is None else ["customer_created"],
    )
    builders.write_plugin(root, name, files)


@pytest.fixture
def plugins(settings: Settings) -> Settings:
    """``tuner`` and ``plain`` on disk before the app starts."""
    write_plugin(settings.plugins_dir, NAME, INIT, HANDLERS)
    write_plugin(settings.plugins_dir, "plain", "from isp.plugins import Plugin\nplugin = Plugin()")
    return settings


@pytest.fixture
def served(plugins: Settings, app: Quart) -> Quart:
    return app


@pytest.fixture
def retries_from_env(monkeypatch: pytest.MonkeyPatch, plugins: Settings) -> str:
    variable = f"ISP_PLUGIN_{NAME.upper()}__RETRIES"
    monkeypatch.setenv(variable, "7")
    return variable


async def seen_by_hook(client: Client, tokens: Tokens) -> str:
    """Create a customer; the hook wrote what it saw into ``address``."""
    response = await client.post("/customers", json={"name": "Ada"}, headers=auth(tokens.operator))
    assert response.status_code == 201, await response.get_data(as_text=True)
    address: str = (await response.get_json())["address"]
    return address


async def put(client: Client, token: str, body: Any, name: str = NAME) -> Any:
    return await client.put(f"/plugins/{name}/settings", json=body, headers=auth(token))


async def get(client: Client, token: str, name: str = NAME) -> Any:
    return await client.get(f"/plugins/{name}/settings", headers=auth(token))


async def raw_column() -> str:
    from tortoise import connections

    rows = await connections.get("default").execute_query_dict(
        "SELECT settings FROM plugin_record WHERE name = 'tuner'"
    )
    return str(rows[0]["settings"])


async def test_get_shows_defaults_schema_and_an_unset_secret_as_null(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    response = await get(client, tokens.admin)
    assert response.status_code == 200
    body = await response.get_json()
    assert body["values"] == {"greeting": "hello", "retries": 3, "api_key": None}
    assert body["overridden"] == []
    assert set(body["schema"]["properties"]) == {"greeting", "retries", "api_key"}
    assert await seen_by_hook(client, tokens) == "hello|3|-"


async def test_bad_value_is_422_naming_the_field_and_changes_nothing(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    response = await put(client, tokens.admin, {"greeting": "hi", "retries": 99})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert problem["errors"][0]["loc"] == ["body", "retries"]
    assert "retries" in problem["detail"]
    assert "input" not in problem["errors"][0]

    unknown = await put(client, tokens.admin, {"colour": "red"})
    assert unknown.status_code == 422
    assert (await unknown.get_json())["errors"][0]["loc"] == ["body", "colour"]
    for body in ([1, 2], "retries=5"):
        assert (await put(client, tokens.admin, body)).status_code == 422

    assert (await (await get(client, tokens.admin)).get_json())["values"]["greeting"] == "hello"
    assert await seen_by_hook(client, tokens) == "hello|3|-"


@pytest.mark.parametrize("value", [True, "5", 5.0])
async def test_a_setting_of_the_wrong_json_type_is_422_not_coerced(
    served: Quart, client: Client, tokens: Tokens, value: Any
) -> None:
    response = await put(client, tokens.admin, {"greeting": "hi", "retries": value})
    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"] == ["body", "retries"]
    assert (await (await get(client, tokens.admin)).get_json())["values"]["retries"] == 3
    assert (await put(client, tokens.admin, {"retries": 5})).status_code == 200


async def test_secret_is_masked_encrypted_at_rest_and_reaches_the_hook(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    response = await put(client, tokens.admin, {"api_key": SECRET, "greeting": "hi"})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert SECRET not in await response.get_data(as_text=True)
    view = await get(client, tokens.admin)
    assert SECRET not in await view.get_data(as_text=True)
    values = (await view.get_json())["values"]
    assert values["api_key"] == MASK
    assert SECRET not in await raw_column()
    assert await seen_by_hook(client, tokens) == f"hi|3|{SECRET}"

    # GET -> PUT round trip: the mask keeps the stored secret.
    values["retries"] = 4
    assert (await put(client, tokens.admin, values)).status_code == 200
    assert await seen_by_hook(client, tokens) == f"hi|4|{SECRET}"

    # A rejected secret is not echoed either.
    refused = await put(client, tokens.admin, {"api_key": ["x" + SECRET]})
    assert refused.status_code == 422
    assert SECRET not in await refused.get_data(as_text=True)

    audit = await client.get("/audit", headers=auth(tokens.admin))
    text = await audit.get_data(as_text=True)
    assert SECRET not in text
    entries = [e for e in (await audit.get_json())["entries"] if e["action"] == "settings"]
    assert entries[0]["detail"] == {"fields": ["retries"]}
    assert entries[1] == {**entries[1], "actor": "alice", "plugin": NAME,
                          "detail": {"fields": ["api_key", "greeting"]}}


async def test_hook_sees_a_new_value_on_its_next_call_without_reload(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    before = await (await client.get(f"/plugins/{NAME}", headers=auth(tokens.admin))).get_json()
    assert await seen_by_hook(client, tokens) == "hello|3|-"
    response = await put(client, tokens.admin, {"greeting": "bonjour", "retries": 5})
    assert response.status_code == 200
    assert (await response.get_json())["values"]["retries"] == 5
    assert await seen_by_hook(client, tokens) == "bonjour|5|-"
    after = await (await client.get(f"/plugins/{NAME}", headers=auth(tokens.admin))).get_json()
    assert after["loaded_at"] == before["loaded_at"]


async def test_environment_override_wins_and_cannot_be_put(
    retries_from_env: str, served: Quart, client: Client, tokens: Tokens
) -> None:
    assert (await put(client, tokens.admin, {"greeting": "hi"})).status_code == 200
    body = await (await get(client, tokens.admin)).get_json()
    assert body["values"]["retries"] == 7
    assert body["overridden"] == ["retries"]
    assert await seen_by_hook(client, tokens) == "hi|7|-"

    refused = await put(client, tokens.admin, {"retries": 2})
    assert refused.status_code == 422
    problem = await refused.get_json()
    assert problem["errors"][0]["loc"] == ["body", "retries"]
    assert retries_from_env in problem["detail"]
    # Repeating the value in force (a GET -> PUT round trip) is not a change.
    assert (await put(client, tokens.admin, body["values"])).status_code == 200
    assert await seen_by_hook(client, tokens) == "hi|7|-"


async def test_put_needs_a_token_and_plugins_manage(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    no_token = await client.put(f"/plugins/{NAME}/settings", json={"retries": 2})
    assert no_token.status_code == 401
    assert (await client.get(f"/plugins/{NAME}/settings")).status_code == 401
    assert (await put(client, tokens.operator, {"retries": 2})).status_code == 403
    assert (await get(client, tokens.operator)).status_code == 403
    assert await seen_by_hook(client, tokens) == "hello|3|-"


async def test_unknown_plugin_and_plugin_without_settings_are_404(
    served: Quart, client: Client, tokens: Tokens
) -> None:
    for name in ("nosuch", "plain"):
        assert (await get(client, tokens.admin, name)).status_code == 404
        response = await put(client, tokens.admin, {"x": 1}, name)
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
    detail = (await (await get(client, tokens.admin, "plain")).get_json())["detail"]
    assert "declares no settings model" in detail


async def test_settings_survive_a_restart(plugins: Settings) -> None:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    first = create_app(plugins)
    async with first.test_app():
        await add_user("alice", ["admin"])
        token = await issue_token("alice", ["admin"])
        response = await put(first.test_client(), token, {"api_key": SECRET, "retries": 9})
        assert response.status_code == 200

    second = create_app(plugins)
    async with second.test_app():
        client = second.test_client()
        values = (await (await get(client, token)).get_json())["values"]
        assert values == {"greeting": "hello", "retries": 9, "api_key": MASK}
        customer = await client.post("/customers", json={"name": "Bo"}, headers=auth(token))
        assert (await customer.get_json())["address"] == f"hello|9|{SECRET}"


async def test_stored_values_that_no_longer_validate_fall_back_to_defaults(
    served: Quart, client: Client, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    from isp.plugins.models import PluginRecord

    stale = {"greeting": "kept", "retries": 999, "api_key": {"__enc__": "garbage"}, "gone": 1}
    await PluginRecord.filter(name=NAME).update(settings=stale)
    with caplog.at_level(logging.WARNING, logger="isp.plugins.settings"):
        await served.extensions["isp.plugins"].settings_store.refresh(NAME)
    assert "retries" in caplog.text
    assert "api_key" in caplog.text
    assert "gone" in caplog.text
    values = (await (await get(client, tokens.admin)).get_json())["values"]
    assert values == {"greeting": "kept", "retries": 3, "api_key": None}
    assert await seen_by_hook(client, tokens) == "kept|3|-"
    # A PUT of another field works and leaves the unusable stored values alone.
    assert (await put(client, tokens.admin, {"greeting": "fixed"})).status_code == 200
    assert await seen_by_hook(client, tokens) == "fixed|3|-"


def test_plugin_settings_property_is_the_model_instance() -> None:
    class Knobs(BaseModel):
        level: int = 2
        token: SecretStr | None = None

    plugin = Plugin(settings=Knobs)
    assert plugin.settings_model is Knobs
    assert plugin.settings == Knobs()  # not loaded by the service: the defaults
    assert Plugin().settings is None
    with pytest.raises(TypeError, match="pydantic model"):
        Plugin(settings=dict)  # type: ignore[arg-type]


def test_environment_gives_collections_as_json_and_older_classes_get_their_own_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Routes(BaseModel):
        prefixes: list[str] = []
        metric: int = 1

    class OlderRoutes(BaseModel):  # the same plugin's class before a reload
        prefixes: list[str] = []

    monkeypatch.setenv("ISP_PLUGIN_ROUTES__PREFIXES", '["10.0.0.0/8", "192.0.2.0/24"]')
    monkeypatch.setenv("ISP_PLUGIN_ROUTES__METRIC", "not a number")
    settings_store = SettingsStore()
    try:
        current = settings_store.register("routes", Routes)
        assert current == Routes(prefixes=["10.0.0.0/8", "192.0.2.0/24"], metric=1)
        assert settings_store.current("routes", Routes) is current
        older = settings_store.current("routes", OlderRoutes)
        assert isinstance(older, OlderRoutes)
        assert older.prefixes == current.prefixes
        assert settings_store.public_view("routes")["overridden"] == ["metric", "prefixes"]
    finally:
        settings_store.forget("routes")
