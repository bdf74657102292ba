"""HTTP -> workflow -> mikrotik hook -> SSH -> emulated router, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest

from isp.core.models import Device
from tests.conftest import Tokens, auth
from tests.routeros import MAGIC_AES, RouterFleet, RouterOSServer, RouterState


async def configure(client: Any, tokens: Tokens, **values: Any) -> dict[str, Any]:
    """Change the plugin's settings the way an operator does."""
    response = await client.put(
        "/plugins/mikrotik/settings", json=values, headers=auth(tokens.admin)
    )
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, body
    return body


@dataclass
class World:
    client: Any
    headers: dict[str, str]
    device_id: int
    service_id: int

    async def move(self, action: str) -> Any:
        return await self.client.post(f"/services/{self.service_id}/{action}", headers=self.headers)

    async def service(self) -> dict[str, Any]:
        response = await self.client.get(f"/services/{self.service_id}", headers=self.headers)
        body: dict[str, Any] = await response.get_json()
        return body

    async def device(self) -> dict[str, Any]:
        response = await self.client.get(f"/devices/{self.device_id}", headers=self.headers)
        body: dict[str, Any] = await response.get_json()
        return body

    async def backup(self) -> Any:
        return await self.client.post(f"/devices/{self.device_id}/backup", headers=self.headers)

    async def backups(self) -> list[dict[str, Any]]:
        response = await self.client.get(f"/devices/{self.device_id}/backups", headers=self.headers)
        body = await response.get_json()
        backups: list[dict[str, Any]] = body["backups"]
        return backups


async def created(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 201, body
    return body


async def add_device(
    client: Any, headers: dict[str, str], router: RouterOSServer, name: str, password: str
) -> int:
    body = {
        "name": name,
        "vendor": "mikrotik",
        "host": router.host,
        "port": router.port,
        "username": "admin",
        "password": password,
    }
    return int((await created(await client.post("/devices", json=body, headers=headers)))["id"])


async def make_world(
    client: Any,
    tokens: Tokens,
    router: RouterOSServer,
    *,
    customer: str = "Alice Example",
    password: str = "pppoe-pw",
    device_password: str = "secret",
) -> World:
    headers = auth(tokens.operator)
    customer_id = (
        await created(await client.post("/customers", json={"name": customer}, headers=headers))
    )["id"]
    plan = {"name": "home-50", "download_mbps": 50, "upload_mbps": 10}
    plan_id = (await created(await client.post("/plans", json=plan, headers=headers)))["id"]
    device_id = await add_device(client, headers, router, "core-1", device_password)
    service = {
        "customer_id": customer_id,
        "plan_id": plan_id,
        "device_id": device_id,
        "username": "alice",
        "password": password,
    }
    service_id = (await created(await client.post("/services", json=service, headers=headers)))[
        "id"
    ]
    return World(client, headers, device_id, service_id)


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


async def test_the_app_loads_the_plugin(client: Any, tokens: Tokens) -> None:
    response = await client.get("/plugins/mikrotik", headers=auth(tokens.admin))
    body = await response.get_json()
    assert response.status_code == 200, body
    assert (body["status"], body["version"]) == ("active", "1.3.0")


async def test_provision_creates_the_secret_and_pins_the_host_key(
    world: World, state: RouterState
) -> None:
    assert (await world.device())["host_key_pinned"] is False
    response = await world.move("provision")
    assert response.status_code == 200, await response.get_json()
    assert (await response.get_json())["status"] == "active"
    secret = state.secret("alice")
    assert secret is not None
    assert (secret.password, secret.profile, secret.service) == ("pppoe-pw", "home-50", "pppoe")
    assert secret.comment == f"isp:service={world.service_id} customer=Alice Example"
    assert state.profile("home-50").rate_limit == "10M/50M"
    assert state.logins == ["admin+ct"]  # one connection for the whole hook
    assert (await world.device())["host_key_pinned"] is True


async def test_a_router_on_an_ipv6_address_is_provisioned_and_backed_up(
    client: Any, tokens: Tokens, state: RouterState
) -> None:
    async with RouterOSServer(state, host="::1") as router:
        world = await make_world(client, tokens, router)
        assert (await world.device())["host"] == "::1"
        response = await world.move("provision")
        assert response.status_code == 200, await response.get_json()
        assert state.secret("alice") is not None
        assert (await world.device())["host_key_pinned"] is True
        backup = await world.backup()
        assert backup.status_code == 201, await backup.get_json()


async def test_provision_over_a_leftover_secret_updates_it(
    world: World, state: RouterState
) -> None:
    state.add_secret("alice", password="old", profile="default", disabled=True)
    state.add_profile("home-50", rate_limit="1M/1M")
    response = await world.move("provision")
    assert response.status_code == 200, await response.get_json()
    assert [s.name for s in state.secrets] == ["alice"]
    secret = state.secret("alice")
    assert (secret.password, secret.profile, secret.disabled) == ("pppoe-pw", "home-50", False)
    assert state.profile("home-50").rate_limit == "10M/50M"


async def test_suspend_kicks_the_session_and_resume_lets_it_back(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.add_active("alice", "10.0.0.2")
    response = await world.move("suspend")
    assert response.status_code == 200, await response.get_json()
    assert (await response.get_json())["status"] == "suspended"
    assert state.secret("alice").disabled
    assert state.active == []
    response = await world.move("resume")
    assert response.status_code == 200, await response.get_json()
    assert not state.secret("alice").disabled


async def test_terminate_removes_the_secret_and_the_session(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.add_active("alice", "10.0.0.2")
    response = await world.move("terminate")
    assert response.status_code == 200, await response.get_json()
    assert state.secrets == []
    assert state.active == []


async def test_injection_through_customer_name_and_password_stays_data(
    client: Any, tokens: Tokens, router: RouterOSServer, state: RouterState
) -> None:
    name = 'Eve"; /system reboot; [/system reboot] $[/system reboot]\n/system reboot'
    password = 'p"w;$[/system reboot]\\'
    world = await make_world(client, tokens, router, customer=name, password=password)
    response = await world.move("provision")
    assert response.status_code == 200, await response.get_json()
    assert state.reboots == 0
    assert state.variables_read == []
    assert [s.split(" ", 3)[:3] for s in state.writes] == [
        ["/ppp", "profile", "add"],
        ["/ppp", "secret", "add"],
    ]
    assert all(s.startswith(("/ppp ", ":if ", ":len ")) for s in state.executed)
    secret = state.secret("alice")
    assert secret.password == password
    assert "/system reboot" in secret.comment
    assert "\n" not in secret.comment


ROUTER_ERRORS = [
    "failure: could not add secret",
    "bad command name add (line 1 column 13)",
    "expected end of command (line 1 column 40)",
    "syntax error (line 1 column 22)",
    "input does not match any value of profile",
    "invalid value for argument remote-address",
    "no such item",
    "not enough permissions (9)",
]


@pytest.mark.parametrize("message", ROUTER_ERRORS)
async def test_router_error_rolls_the_workflow_back_with_the_router_message(
    world: World, state: RouterState, message: str
) -> None:
    state.fail_next(message, match="secret add")
    response = await world.move("provision")
    problem = await response.get_json()
    assert response.status_code == 422, problem
    assert response.content_type == "application/problem+json"
    assert (problem["plugin"], problem["hook"], problem["event"]) == (
        "mikrotik", "handlers.service_provision", "service_provision"
    )
    assert problem["router_message"] == message
    assert message in problem["detail"]
    assert problem["device_id"] == world.device_id
    assert "pppoe-pw" not in str(problem)
    assert (await world.service())["status"] == "pending"
    assert state.secrets == []


async def test_router_error_on_suspend_keeps_the_service_active(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.fail_next("not enough permissions (9)", match="secret disable")
    response = await world.move("suspend")
    assert response.status_code == 422
    assert (await world.service())["status"] == "active"


async def test_wrong_router_password_fails_without_leaking_it(
    client: Any, tokens: Tokens, router: RouterOSServer
) -> None:
    world = await make_world(client, tokens, router, device_password="not-the-password")
    response = await world.move("provision")
    problem = await response.get_json()
    assert response.status_code == 502, problem
    assert "refused the login" in problem["detail"]
    assert "not-the-password" not in str(problem)
    assert (await world.service())["status"] == "pending"


async def test_changed_host_key_is_refused_until_re_trusted(
    world: World, state: RouterState, router: RouterOSServer
) -> None:
    assert (await world.move("provision")).status_code == 200
    port = router.port
    await router.stop()
    impostor_key = asyncssh.generate_private_key("ssh-ed25519")
    async with RouterOSServer(state, port=port, host_key=impostor_key):
        state.logins.clear()
        response = await world.move("suspend")
        problem = await response.get_json()
        assert response.status_code == 409, problem
        assert problem["presented"] == impostor_key.get_fingerprint("sha256")
        assert "re-trust" in problem["detail"]
        assert state.logins == []
        assert (await world.service())["status"] == "active"
        backup = await world.backup()
        assert backup.status_code == 409
        assert await world.backups() == []
        # As PUT /devices/{id}/trust with {} does: forget the pinned key; the next
        # connection pins the key the router presents now.
        await Device.filter(id=world.device_id).update(host_key=None)
        response = await world.move("suspend")
        assert response.status_code == 200, await response.get_json()
        device = await Device.get(id=world.device_id)
        assert device.host_key == " ".join(impostor_key.export_public_key().decode().split()[:2])


async def test_unchanged_router_gives_an_unchanged_export(world: World, state: RouterState) -> None:
    first = await world.backup()
    assert first.status_code == 201, await first.get_json()
    assert (await first.get_json())["changed"] is True
    second = await world.backup()
    body = await second.get_json()
    assert (body["kind"], body["changed"]) == ("export", False)
    state.add_secret("bob", password="pw")
    third = await (await world.backup()).get_json()
    assert third["changed"] is True


async def test_backup_stores_export_and_binary_and_cleans_the_flash(
    world: World, state: RouterState, tokens: Tokens
) -> None:
    shown = await configure(world.client, tokens, backup_key="operator-key-1")
    assert shown["values"]["backup_key"] == "********"
    response = await world.backup()
    assert response.status_code == 201, await response.get_json()
    kinds = {b["kind"]: b for b in await world.backups()}
    assert set(kinds) == {"export", "binary"}
    content = await world.client.get(
        f"/backups/{kinds['binary']['id']}/content", headers=world.headers
    )
    data = await content.get_data()
    assert struct.unpack("<I", data[:4])[0] == MAGIC_AES
    export = await world.client.get(
        f"/backups/{kinds['export']['id']}/content", headers=world.headers
    )
    assert (await export.get_data()).startswith(b"# ")
    assert state.files == {}
    assert state.logins == ["admin+ct"]


async def test_connection_dropped_mid_export_stores_nothing(
    world: World, state: RouterState
) -> None:
    state.drop_during_export = True
    response = await world.backup()
    problem = await response.get_json()
    assert response.status_code == 502, problem
    assert "lost during '/export'" in problem["detail"]
    assert await world.backups() == []


async def test_v6_rejecting_show_sensitive_is_never_stored_as_a_backup(
    client: Any, tokens: Tokens
) -> None:
    await configure(client, tokens, export_show_sensitive=True, binary_backup=False)
    v6 = RouterState(legacy_v6=True)
    v6.add_secret("alice", password="pw")
    async with RouterOSServer(v6) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    [stored] = await world.backups()
    content = await client.get(f"/backups/{stored['id']}/content", headers=world.headers)
    text = (await content.get_data()).decode()
    assert "by RouterOS 6.49.17" in text.splitlines()[0]
    assert "expected end of command" not in text


async def test_fleet_backup_job_backs_up_every_router(client: Any, tokens: Tokens) -> None:
    headers = auth(tokens.operator)
    async with RouterFleet(6) as fleet:
        fleet[5].state.drop_during_export = True
        ids = [
            await add_device(client, headers, router, f"r{i}", "secret")
            for i, router in enumerate(fleet)
        ]
        response = await client.post("/backups/run", json={"device_ids": ids}, headers=headers)
        assert response.status_code == 202, await response.get_json()
        job_id = (await response.get_json())["job_id"]
        for _ in range(200):
            job = await (await client.get(f"/jobs/{job_id}", headers=headers)).get_json()
            if job["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
    assert (job["total"], job["done"]) == (6, 6)
    assert [f["device_id"] for f in job["failed"]] == [ids[5]]
    assert all(router.state.files == {} for router in fleet)


async def test_plan_change_sets_the_profile_rate_on_the_router(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    plan_id = (await world.service())["plan_id"]
    response = await world.client.patch(
        f"/plans/{plan_id}", json={"download_mbps": 200, "upload_mbps": 40}, headers=world.headers
    )
    assert response.status_code == 200, await response.get_json()
    assert state.profile("home-50").rate_limit == "40M/200M"


async def test_refused_plan_change_leaves_the_plan_unchanged(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    plan_id = (await world.service())["plan_id"]
    state.fail_next("failure: not enough permissions (9)", match="profile set")
    response = await world.client.patch(
        f"/plans/{plan_id}", json={"download_mbps": 200}, headers=world.headers
    )
    problem = await response.get_json()
    assert response.status_code == 422, problem
    assert (problem["plugin"], problem["hook"], problem["event"]) == (
        "mikrotik", "handlers.plan_updated", "plan_updated"
    )
    plan = await (await world.client.get(f"/plans/{plan_id}", headers=world.headers)).get_json()
    assert plan["download_mbps"] == 50
    assert state.profile("home-50").rate_limit == "10M/50M"


async def test_service_password_and_plan_change_follow_on_the_router(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.add_active("alice", "10.0.0.2")
    changed = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw-1"}, headers=world.headers
    )
    assert changed.status_code == 200, await changed.get_json()
    assert state.secret("alice").password == "new-pw-1"
    assert [a.name for a in state.active] == ["alice"]  # a password alone keeps the session
    plan = {"name": "home-200", "download_mbps": 200, "upload_mbps": 50}
    new_plan = (await created(await world.client.post("/plans", json=plan, headers=world.headers)))[
        "id"
    ]
    moved = await world.client.patch(
        f"/services/{world.service_id}", json={"plan_id": new_plan}, headers=world.headers
    )
    assert moved.status_code == 200, await moved.get_json()
    assert state.secret("alice").profile == "home-200"
    assert state.profile("home-200").rate_limit == "50M/200M"
    assert state.active == []  # kicked: the new rate applies at the next login


async def test_suspended_service_stays_disabled_after_a_plan_change(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    assert (await world.move("suspend")).status_code == 200
    plan = {"name": "home-200", "download_mbps": 200, "upload_mbps": 50}
    new_plan = (await created(await world.client.post("/plans", json=plan, headers=world.headers)))[
        "id"
    ]
    moved = await world.client.patch(
        f"/services/{world.service_id}", json={"plan_id": new_plan}, headers=world.headers
    )
    assert moved.status_code == 200, await moved.get_json()
    assert state.secret("alice").disabled
    assert state.secret("alice").profile == "home-200"


async def test_refused_service_change_leaves_the_service_unchanged(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.fail_next("failure: not enough permissions (9)", match="secret set")
    response = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw-1"}, headers=world.headers
    )
    problem = await response.get_json()
    assert response.status_code == 422, problem
    assert (problem["plugin"], problem["hook"], problem["event"]) == (
        "mikrotik", "handlers.service_update", "service_update"
    )
    assert "new-pw-1" not in str(problem)
    assert state.secret("alice").password == "pppoe-pw"
    from isp.core.models import Service

    stored = await Service.get(id=world.service_id)
    assert stored.reveal_password() == "pppoe-pw"


async def test_pending_service_change_does_not_touch_the_router(
    world: World, state: RouterState
) -> None:
    response = await world.client.patch(
        f"/services/{world.service_id}", json={"password": "new-pw-1"}, headers=world.headers
    )
    assert response.status_code == 200
    assert state.logins == []
