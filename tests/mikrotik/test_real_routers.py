"""RouterOS as real routers behave (ROUTEROS.md, "Seen on real routers"), end to end.

HTTP -> workflow -> mikrotik hook -> SSH -> the double with one quirk switched on, on
SQLite and PostgreSQL. One test (or a few) per thing that went wrong with such routers:
v7.17+ backup output, exports with error lines, clean cuts, `flash/` devices, backups
written in the background, both "already exists" wordings, suspending a subscriber who
is not on the router, secrets missing from v7 exports, volatile warning lines.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest

from tests.conftest import Tokens, auth
from tests.mikrotik.test_end_to_end import World, add_device, configure, make_world
from tests.routeros import MAGIC_PLAIN, RouterFleet, RouterOSServer, RouterState


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


def many_secrets(state: RouterState, count: int = 60) -> None:
    for i in range(count):
        state.add_secret(f"user{i}", password=f"pw{i}", service="pppoe", comment="c" * 40)


async def problem_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.get_json()
    assert response.content_type == "application/problem+json", body
    return body


async def wait_for_job(client: Any, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(400):
        response = await client.get(f"/jobs/{job_id}", headers=headers)
        job: dict[str, Any] = await response.get_json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


# 1. RouterOS 7.17+ prints two lines on /system backup save ------------------------------


async def test_v7_17_two_line_backup_save_stores_export_and_binary(
    client: Any, tokens: Tokens
) -> None:
    state = RouterState(version="7.17.2")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    assert sorted(b["kind"] for b in await world.backups()) == ["binary", "export"]
    assert state.backups_saved == 1
    assert state.files == {}


async def test_failed_backup_save_keeps_the_export_and_names_the_step(
    client: Any, tokens: Tokens
) -> None:
    # beeyev #62 (7.16.1): Saving ... / Failed to save system configuration backup /
    # invalid file name
    state = RouterState(backup_save_error="invalid file name")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        problem = await problem_of(await world.backup())
    assert problem["step"] == "binary"
    assert (problem["plugin"], problem["hook"], problem["event"]) == (
        "mikrotik", "handlers.device_backup", "device_backup"
    )
    assert "Failed to save system configuration backup" in problem["router_message"]
    assert "invalid file name" in problem["detail"]
    [stored] = problem["stored"]
    listed = await world.backups()
    assert [b["kind"] for b in listed] == ["export"]
    assert stored == listed[0]
    assert state.files == {}


async def test_fleet_job_failure_entry_names_the_step_and_what_was_stored(
    client: Any, tokens: Tokens
) -> None:
    headers = auth(tokens.operator)
    await configure(client, tokens, backup_file_wait=1)
    async with RouterFleet(3) as fleet:
        fleet[1].state.backup_save_error = "invalid file name"  # 422: the router refused
        fleet[2].state.backup_write_stalls = True  # 502, which alone would be retried
        ids = [
            await add_device(client, headers, router, f"r{i}", "secret")
            for i, router in enumerate(fleet)
        ]
        response = await client.post("/backups/run", json={"device_ids": ids}, headers=headers)
        job = await wait_for_job(client, headers, (await response.get_json())["job_id"])
        assert all(router.state.files == {} for router in fleet)
    assert sorted(f["device_id"] for f in job["failed"]) == ids[1:]
    for failure in job["failed"]:
        assert failure["step"] == "binary"
        assert failure["stored"] == ["export"]
        assert failure["attempts"] == 1  # the export is safe: not retried (stored twice)
    for device_id in ids[1:]:
        response = await client.get(f"/devices/{device_id}/backups", headers=headers)
        assert [b["kind"] for b in (await response.get_json())["backups"]] == ["export"]
    assert fleet[2].state.backups_saved == 1


# 2. Exports with #error exporting / #interrupted lines ----------------------------------

ERROR_EXPORTS = [
    # MikroTik manual, Configuration Management (since 7.11)
    ("7.16.1", {"export_timeouts": ["/ip/firewall/calea"]}, ["/ip/firewall/calea"], False),
    ("6.49.17", {"export_timeouts": ["/ip/firewall/calea"]}, ["/ip firewall calea"], False),
    # a cut v6 export: #error exporting /ip socks, then #interrupted
    ("6.49.17", {"export_interrupted_at": "/ip/socks"}, ["/ip socks"], True),
]


@pytest.mark.parametrize(("version", "knobs", "menus", "interrupted"), ERROR_EXPORTS)
async def test_export_with_error_lines_is_refused_and_the_last_good_one_kept(
    client: Any,
    tokens: Tokens,
    version: str,
    knobs: dict[str, Any],
    menus: list[str],
    interrupted: bool,
) -> None:
    await configure(client, tokens, binary_backup=False)
    state = RouterState(version=version)
    state.add_secret("alice", password="pw")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        good = await world.backup()
        assert good.status_code == 201, await good.get_json()
        for name, value in knobs.items():
            setattr(state, name, value)
        response = await world.backup()
        problem = await problem_of(response)
    assert response.status_code == 502, problem
    assert problem["menus"] == menus
    assert problem["interrupted"] is interrupted
    assert problem["step"] == "export"
    assert all(menu in problem["detail"] for menu in menus)
    assert [b["id"] for b in await world.backups()] == [(await good.get_json())["id"]]


# 3. A cut export with a clean close (exit status 0) ---------------------------------------


async def test_clean_cut_export_is_refused(client: Any, tokens: Tokens) -> None:
    await configure(client, tokens, binary_backup=False)
    state = RouterState()
    many_secrets(state)
    state.export_cut_at = 2000
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        problem = await problem_of(response)
    assert response.status_code == 502, problem
    assert problem["truncated"] is True
    assert problem["step"] == "export"
    assert "cut short" in problem["detail"]
    assert await world.backups() == []


# 4. Devices with a flash/ directory -------------------------------------------------------


async def test_flash_device_backup_is_found_fetched_and_removed(
    client: Any, tokens: Tokens
) -> None:
    await configure(client, tokens, backup_file_wait=1)
    state = RouterState(flash=True)
    state.add_secret("alice", password="pw")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    binary = next(b for b in await world.backups() if b["kind"] == "binary")
    content = await world.client.get(f"/backups/{binary['id']}/content", headers=world.headers)
    data = await content.get_data()
    assert struct.unpack("<II", data[:8]) == (MAGIC_PLAIN, len(data))
    assert state.files == {}  # nothing left under flash/


# 5. A .backup written in the background --------------------------------------------------


async def test_backup_written_in_the_background_is_read_only_when_complete(
    client: Any, tokens: Tokens
) -> None:
    state = RouterState(backup_write_time=0.6)
    state.add_secret("alice", password="pw", comment="c" * 300)
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    binary = next(b for b in await world.backups() if b["kind"] == "binary")
    content = await world.client.get(f"/backups/{binary['id']}/content", headers=world.headers)
    data = await content.get_data()
    assert struct.unpack("<I", data[4:8])[0] == len(data) == binary["size"]
    assert state.files == {}


async def test_backup_that_never_completes_keeps_the_export_and_leaves_nothing(
    client: Any, tokens: Tokens
) -> None:
    await configure(client, tokens, backup_file_wait=1)
    state = RouterState(backup_write_stalls=True)
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        problem = await problem_of(await world.backup())
    assert problem["step"] == "binary"
    assert "not complete" in problem["detail"]
    assert [b["kind"] for b in problem["stored"]] == ["export"]
    assert [b["kind"] for b in await world.backups()] == ["export"]  # no half .backup
    assert state.files == {}


# 6. "Already exists" in both wordings -----------------------------------------------------


async def test_provisioning_over_leftovers_works_whatever_the_wording(
    world: World, state: RouterState
) -> None:
    state.item_exists_wording = True  # v7 menus: failure: item with this name already exists
    state.add_profile("home-50", rate_limit="1M/1M")
    state.add_secret("alice", password="old", profile="default", disabled=True)
    response = await world.move("provision")
    assert response.status_code == 200, await response.get_json()
    assert state.profile("home-50").rate_limit == "10M/50M"
    secret = state.secret("alice")
    assert (secret.password, secret.profile, secret.disabled) == ("pppoe-pw", "home-50", False)
    assert [s.name for s in state.secrets] == ["alice"]
    assert not any("already exists" in line for line in state.exec_commands)


# 7. Suspending a subscriber who is not on the router -----------------------------------


async def test_suspend_of_a_subscriber_missing_on_the_router_is_refused(
    world: World, state: RouterState, router: RouterOSServer
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.secret("alice").name = "alice-renamed"  # renamed on the router by hand
    state.add_active("alice-renamed", "10.0.0.2")
    response = await world.move("suspend")
    problem = await problem_of(response)
    assert response.status_code == 409, problem
    assert (problem["subscriber"], problem["host"]) == ("alice", router.host)
    assert "alice" in problem["detail"]
    assert router.host in problem["detail"]
    assert (await world.service())["status"] == "active"
    assert [a.name for a in state.active] == ["alice-renamed"]


async def test_terminate_of_a_subscriber_already_gone_succeeds_with_a_warning(
    world: World, state: RouterState, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.secrets.clear()
    with caplog.at_level(logging.WARNING):
        response = await world.move("terminate")
    assert response.status_code == 200, await response.get_json()
    assert (await response.get_json())["status"] == "terminated"
    warnings = [r for r in caplog.records if getattr(r, "subscriber", None) == "alice"]
    assert warnings
    assert warnings[0].levelno == logging.WARNING
    assert "already" in warnings[0].getMessage()


# 8. A portable copy of the subscriber passwords by default ----------------------------


async def test_v7_export_includes_the_secrets_by_default(world: World, state: RouterState) -> None:
    assert (await world.move("provision")).status_code == 200
    response = await world.backup()
    assert response.status_code == 201, await response.get_json()
    export = await world.client.get(
        f"/backups/{(await response.get_json())['id']}/content", headers=world.headers
    )
    assert "password=pppoe-pw" in await export.get_data(as_text=True)
    assert any(c.startswith("/export show-sensitive") for c in state.exec_commands)


async def test_v6_default_export_is_plain_and_never_the_rejection(
    client: Any, tokens: Tokens
) -> None:
    await configure(client, tokens, binary_backup=False)
    state = RouterState(version="6.49.17")
    state.add_secret("alice", password="s3cret")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    content = await client.get(
        f"/backups/{(await response.get_json())['id']}/content", headers=world.headers
    )
    text = await content.get_data(as_text=True)
    assert "by RouterOS 6.49.17" in text.splitlines()[0]
    assert "expected end of command" not in text
    assert "password=s3cret" in text


async def test_missing_sensitive_policy_is_warned_about(
    client: Any, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    await configure(client, tokens, binary_backup=False)
    state = RouterState()
    state.add_secret("alice", password="s3cret")
    state.revoke("admin", "sensitive")
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        with caplog.at_level(logging.WARNING):
            response = await world.backup()
        assert response.status_code == 201, await response.get_json()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sensitive" in message for message in warned), warned


# 9. Volatile warnings; step timeouts inside the hook's ------------------------------------


async def test_restart_warning_line_does_not_mark_the_export_changed(
    world: World, state: RouterState, tokens: Tokens
) -> None:
    await configure(world.client, tokens, binary_backup=False)
    assert (await world.backup()).status_code == 201
    # the style of warning Oxidized's RouterOS model strips
    state.export_warnings = [
        "# IPv6 forwarding changed, please restart the device in order to apply the new setting"
    ]
    response = await world.backup()
    body = await response.get_json()
    assert response.status_code == 201, body
    assert body["changed"] is False
