"""The /plugins blueprint: listing, details with stats, enable/disable on a minimal app;
who may call each route and what a malformed upload request gets, on the full app (both
databases, both object stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.auth.roles import add_user, ensure_builtin_roles, upsert_role
from isp.auth.tokens import issue_token
from isp.config import Settings
from isp.plugins.api import EXTENSION, SERVICE_EXTENSION, bp
from isp.plugins.registry import PluginRegistry
from isp.plugins.runtime import PluginRuntime
from isp.plugins.service import PluginService
from isp.problems import install_error_handlers
from isp.storage import LocalObjectStore
from tests.conftest import Tokens, auth
from tests.plugins.builders import stamp_zip, upload
from tests.plugins.conftest import STORES, Install


@dataclass
class Api:
    client: Client
    registry: PluginRegistry
    admin: dict[str, str]


@pytest.fixture
async def api(
    install: Install, migrated_sqlite: Settings, app_registry: PluginRegistry
) -> AsyncIterator[Api]:
    install("dummy", "bad_version")
    app = Quart(__name__)
    install_error_handlers(app)
    runtime = PluginRuntime(migrated_sqlite, app_registry)
    app.extensions[EXTENSION] = runtime
    store = LocalObjectStore(migrated_sqlite.objects_dir)
    app.extensions[SERVICE_EXTENSION] = PluginService(migrated_sqlite, runtime, store)
    app.register_blueprint(bp)
    await ensure_builtin_roles()
    await add_user("alice", ["admin"])
    admin = await issue_token("alice", ["admin"])
    await runtime.start()
    try:
        yield Api(
            app.test_client(),
            app_registry,
            {"Authorization": f"Bearer {admin}"},
        )
    finally:
        await runtime.stop()


async def get_json(api: Api, path: str, headers: dict[str, str] | None = None) -> Any:
    response = await api.client.get(path, headers=api.admin if headers is None else headers)
    return response.status_code, await response.get_json()


async def test_list_shows_every_plugin_with_its_status(api: Api) -> None:
    status, body = await get_json(api, "/plugins")
    assert status == 200
    plugins = {p["name"]: p for p in body["plugins"]}
    assert plugins["dummy"]["status"] == "active"
    assert plugins["bad_version"]["status"] == "error"
    assert "'x' is not a semantic version" in plugins["bad_version"]["error"]


async def test_detail_has_stats_per_hook(api: Api) -> None:
    await api.registry.emit("customer_created", "ada")
    status, body = await get_json(api, "/plugins/dummy")
    assert status == 200
    stats = {s["hook"]: s for s in body["stats"]}
    assert stats["handlers.greet"]["event"] == "customer_created"
    assert stats["handlers.greet"]["calls"] == 1


async def test_unknown_plugin_is_a_404_problem(api: Api) -> None:
    response = await api.client.get("/plugins/ghost", headers=api.admin)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "ghost" in (await response.get_json())["detail"]


async def test_disable_then_enable_round_trip(api: Api) -> None:
    response = await api.client.put("/plugins/dummy/disable", headers=api.admin)
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "disabled"
    assert await api.registry.emit("customer_created", "ada") == []

    response = await api.client.put("/plugins/dummy/enable", headers=api.admin)
    assert (await response.get_json())["status"] == "active"
    assert len(await api.registry.emit("customer_created", "ada")) == 1


@STORES
async def test_upload_without_file_field_is_422(client: Client, tokens: Tokens) -> None:
    response = await client.post("/plugins/upload", headers=auth(tokens.admin))
    assert response.status_code == 422
    assert ["body", "file"] in [e["loc"] for e in (await response.get_json())["errors"]]


CHANGES = [
    ("post", "/plugins/upload"),
    ("put", "/plugins/stamp/enable"),
    ("put", "/plugins/stamp/disable"),
    ("delete", "/plugins/stamp"),
]


@STORES
@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_reading_needs_a_token_and_every_change_needs_admin_scope_and_plugins_manage(
    app: Quart, client: Client, tokens: Tokens, method: str, path: str
) -> None:
    await upload(client, tokens.admin, stamp_zip())
    await upsert_role("auditor", ["admin"])
    await add_user("audrey", ["auditor"])
    auditor = await issue_token("audrey", ["admin"])  # admin scope, no plugins:manage
    assert (await client.get("/plugins")).status_code == 401
    assert (await client.get("/plugins", headers=auth(auditor))).status_code == 200
    call = getattr(client, method)
    assert (await call(path)).status_code == 401
    assert (await call(path, headers=auth(tokens.operator))).status_code == 403
    refused = await call(path, headers=auth(auditor))
    assert refused.status_code == 403
    assert "plugins:manage" in (await refused.get_json())["detail"]
    assert (await client.get("/audit", headers=auth(tokens.operator))).status_code == 403
    described = await (await client.get("/plugins/stamp", headers=auth(auditor))).get_json()
    assert described["status"] == "active"  # nothing changed
