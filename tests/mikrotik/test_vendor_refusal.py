"""A service move no enabled plugin carries out is refused, not answered "done".

The app loads the real MikroTik plugin (which declares ``"vendors": ["mikrotik"]``) and
the SMS gateway plugin (no ``vendors``: it texts, it drives no router), against the
RouterOS double, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.mikrotik.test_end_to_end import World, make_world
from tests.routeros import RouterOSServer, RouterState
from tests.sms_gateway.loaded import PLUGIN_DIR as SMS_GATEWAY_DIR

REFUSED = "enable a plugin that handles {event} for mikrotik devices"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """MikroTik (from the package's conftest) plus the SMS gateway."""
    shutil.copytree(
        SMS_GATEWAY_DIR,
        settings.plugins_dir / "sms_gateway",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return settings


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


async def set_enabled(world: World, tokens: Tokens, name: str, enabled: bool) -> None:
    verb = "enable" if enabled else "disable"
    response = await world.client.put(f"/plugins/{name}/{verb}", headers=auth(tokens.admin))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["enabled"] is enabled


async def audit_entries(world: World, tokens: Tokens) -> list[dict[str, Any]]:
    response = await world.client.get("/audit", headers=auth(tokens.admin))
    assert response.status_code == 200
    entries: list[dict[str, Any]] = (await response.get_json())["entries"]
    return entries


async def assert_refused(response: Any, event: str, device_id: int) -> None:
    assert response.status_code == 409, await response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert (problem["vendor"], problem["event"], problem["device_id"]) == (
        "mikrotik",
        event,
        device_id,
    )
    assert REFUSED.format(event=event) in problem["detail"]
    assert f"device {device_id}" in problem["detail"]


async def test_provision_is_refused_while_the_mikrotik_plugin_is_disabled(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    await set_enabled(world, tokens, "mikrotik", False)
    audit_before = await audit_entries(world, tokens)

    response = await world.move("provision")

    await assert_refused(response, "service_provision", world.device_id)
    assert (await world.service())["status"] == "pending"
    assert (state.logins, state.executed, state.secrets) == ([], [], [])
    assert await audit_entries(world, tokens) == audit_before


async def test_provision_runs_once_the_mikrotik_plugin_is_enabled_again(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    await set_enabled(world, tokens, "mikrotik", False)
    await assert_refused(await world.move("provision"), "service_provision", world.device_id)

    await set_enabled(world, tokens, "mikrotik", True)
    response = await world.move("provision")

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await world.service())["status"] == "active"
    secret = state.secret("alice")
    assert secret is not None
    assert not secret.disabled


@pytest.mark.parametrize(
    ("action", "event"), [("suspend", "service_suspend"), ("terminate", "service_terminate")]
)
async def test_every_move_of_an_active_service_is_refused_without_the_plugin(
    world: World, tokens: Tokens, state: RouterState, action: str, event: str
) -> None:
    assert (await world.move("provision")).status_code == 200
    await set_enabled(world, tokens, "mikrotik", False)
    executed = list(state.executed)

    await assert_refused(await world.move(action), event, world.device_id)

    assert (await world.service())["status"] == "active"
    assert state.executed == executed
    assert state.secret("alice") is not None


async def test_resume_is_refused_without_the_plugin(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    assert (await world.move("suspend")).status_code == 200
    await set_enabled(world, tokens, "mikrotik", False)

    await assert_refused(await world.move("resume"), "service_resume", world.device_id)

    assert (await world.service())["status"] == "suspended"
    secret = state.secret("alice")
    assert secret is not None
    assert secret.disabled


async def test_the_sms_gateway_alone_does_not_make_a_move_possible(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    plugins = await world.client.get("/plugins", headers=auth(tokens.admin))
    listed = {p["name"]: p["status"] for p in (await plugins.get_json())["plugins"]}
    assert listed == {"mikrotik": "active", "sms_gateway": "active"}
    await set_enabled(world, tokens, "mikrotik", False)

    await assert_refused(await world.move("provision"), "service_provision", world.device_id)

    assert (await world.service())["status"] == "pending"
    assert state.logins == []
    stats = await world.client.get("/plugins/sms_gateway", headers=auth(tokens.admin))
    hooks = {h["event"]: h for h in (await stats.get_json())["stats"]}
    assert hooks["service_provision"]["hook"] == "handlers.text_welcome"
    assert hooks["service_provision"]["calls"] == 0  # refused before any hook ran


async def test_a_password_change_on_the_router_is_refused_without_the_plugin(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    await set_enabled(world, tokens, "mikrotik", False)

    response = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw"}, headers=world.headers
    )

    await assert_refused(response, "service_update", world.device_id)
    secret = state.secret("alice")
    assert secret is not None
    assert secret.password == "pppoe-pw"
    await set_enabled(world, tokens, "mikrotik", True)
    again = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw"}, headers=world.headers
    )
    assert again.status_code == 200, await again.get_data(as_text=True)
    secret = state.secret("alice")
    assert secret is not None
    assert secret.password == "new-pw"


async def test_a_pending_service_changes_without_the_plugin(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    """Nothing of a pending service is on the router: there is nothing to refuse."""
    await set_enabled(world, tokens, "mikrotik", False)
    response = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw"}, headers=world.headers
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert state.logins == []


async def test_force_terminate_still_ends_the_service_without_the_plugin(
    world: World, tokens: Tokens, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    await set_enabled(world, tokens, "mikrotik", False)

    forced = await world.client.post(
        f"/services/{world.service_id}/terminate?force=true", headers=auth(tokens.admin)
    )

    assert forced.status_code == 200, await forced.get_data(as_text=True)
    body = await forced.get_json()
    assert (body["status"], body["hook_failures"]) == ("terminated", [])
    assert (await world.service())["status"] == "terminated"
    entries = await audit_entries(world, tokens)
    [entry] = [e for e in entries if e["action"] == "service_force_terminate"]
    assert entry["detail"]["service_id"] == world.service_id
