"""The /plugins blueprint on a minimal app: listing, details with stats, enable/disable."""

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
from tests.plugins.conftest import Install


@dataclass
class Api:
    client: Client
    registry: PluginRegistry
    admin: dict[str, str]
    auditor: dict[str, str]  # admin scope, but no plugins:manage permission


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
    await upsert_role("auditor", ["admin"])
    await add_user("alice", ["admin"])
    await add_user("audrey", ["auditor"])
    admin = await issue_token("alice", ["admin"])
    auditor = await issue_token("audrey", ["admin"])
    await runtime.start()
    try:
        yield Api(
            app.test_client(),
            app_registry,
            {"Authorization": f"Bearer {admin}"},
            {"Authorization": f"Bearer {auditor}"},
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


async def test_reading_needs_a_token_and_managing_needs_the_permission(api: Api) -> None:
    assert (await api.client.get("/plugins")).status_code == 401
    status, _ = await get_json(api, "/plugins", api.auditor)
    assert status == 200
    response = await api.client.put("/plugins/dummy/disable", headers=api.auditor)
    assert response.status_code == 403
    assert "plugins:manage" in (await response.get_json())["detail"]
