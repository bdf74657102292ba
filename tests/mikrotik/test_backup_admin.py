"""Backups seen by an operator: re-trusting a host key, diffs, retention, fleet retries."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import pytest

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.mikrotik.test_end_to_end import World, add_device, configure, make_world
from tests.routeros import RouterFleet, RouterOSServer, RouterState


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short per-device timeout and one retry, so the job tests stay fast."""
    return settings.model_copy(update={"backup_device_timeout": 1.0, "backup_retries": 1})


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


async def test_changed_key_is_refused_until_re_trusted_over_http(
    world: World, state: RouterState, router: RouterOSServer, tokens: Tokens
) -> None:
    assert (await world.move("provision")).status_code == 200
    pinned = (await world.device())["host_key_fingerprint"]
    assert pinned == router.host_key.get_fingerprint("sha256")
    port = router.port
    await router.stop()
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    async with RouterOSServer(state, port=port, host_key=impostor):
        assert (await world.move("suspend")).status_code == 409
        reader = await world.client.put(
            f"/devices/{world.device_id}/trust", json={}, headers=auth(tokens.reader)
        )
        assert reader.status_code == 403
        bad = await world.client.put(
            f"/devices/{world.device_id}/trust",
            json={"host_key": "ssh-ed25519 not-base64!"},
            headers=world.headers,
        )
        assert bad.status_code == 422
        assert ["body", "host_key"] in [e["loc"] for e in (await bad.get_json())["errors"]]
        trusted = await world.client.put(
            f"/devices/{world.device_id}/trust", json={}, headers=world.headers
        )
        assert trusted.status_code == 200
        assert (await trusted.get_json())["host_key_pinned"] is False
        assert (await world.move("suspend")).status_code == 200
        assert (await world.device())["host_key_fingerprint"] == impostor.get_fingerprint("sha256")

        # Pinning a given key: the router's real key is then refused again.
        other = asyncssh.generate_private_key("ssh-ed25519")
        line = other.export_public_key().decode()
        pinned_other = await world.client.put(
            f"/devices/{world.device_id}/trust", json={"host_key": line}, headers=world.headers
        )
        assert (await pinned_other.get_json())["host_key_fingerprint"] == other.get_fingerprint(
            "sha256"
        )
        assert (await world.move("resume")).status_code == 409
    audit = await (await world.client.get("/audit", headers=auth(tokens.admin))).get_json()
    assert [e["action"] for e in audit["entries"]].count("device_trust") == 2


async def test_diff_shows_what_changed_between_two_exports(
    world: World, state: RouterState, tokens: Tokens
) -> None:
    await configure(world.client, tokens, binary_backup=False)
    first = await (await world.backup()).get_json()
    state.add_secret("bob", password="pw")
    second = await (await world.backup()).get_json()
    diff = await world.client.get(f"/backups/{second['id']}/diff", headers=world.headers)
    assert diff.status_code == 200
    text = await diff.get_data(as_text=True)
    added = [line for line in text.splitlines() if line.startswith("+") and "bob" in line]
    assert added, text
    assert f"backup-{first['id']}" in text
    explicit = await world.client.get(
        f"/backups/{second['id']}/diff?against={first['id']}", headers=world.headers
    )
    assert await explicit.get_data(as_text=True) == text
    first_alone = await world.client.get(f"/backups/{first['id']}/diff", headers=world.headers)
    assert first_alone.status_code == 404
    bad = await world.client.get(f"/backups/{second['id']}/diff?against=x", headers=world.headers)
    assert bad.status_code == 422


async def test_diff_refuses_binary_backups(world: World, tokens: Tokens) -> None:
    await world.backup()
    binary = next(b for b in await world.backups() if b["kind"] == "binary")
    export = next(b for b in await world.backups() if b["kind"] == "export")
    response = await world.client.get(
        f"/backups/{export['id']}/diff?against={binary['id']}", headers=world.headers
    )
    assert response.status_code == 422


async def test_retention_keeps_changed_exports_and_the_last_unchanged(
    world: World, state: RouterState, tokens: Tokens, app: Any
) -> None:
    await configure(world.client, tokens, binary_backup=False, export_retention=2)
    for _ in range(4):
        assert (await world.backup()).status_code == 201
    state.add_secret("carol", password="pw")
    for _ in range(3):
        assert (await world.backup()).status_code == 201
    backups = await world.backups()
    assert [b["changed"] for b in backups] == [False, False, True, True]
    parts = app.extensions["isp"]
    stored = await parts.store.list(parts.settings.s3_backups_bucket, f"devices/{world.device_id}/")
    assert len(stored) == 4


async def test_fleet_job_retries_a_dropped_router_and_times_out_a_stuck_one(
    client: Any, tokens: Tokens
) -> None:
    headers = auth(tokens.operator)
    await configure(client, tokens, binary_backup=False)
    async with RouterFleet(3) as fleet:
        flaky, stuck = fleet[1].state, fleet[2].state
        flaky.drop_during_export = True
        stuck.export_delay = 5
        ids = [
            await add_device(client, headers, router, f"r{i}", "secret")
            for i, router in enumerate(fleet)
        ]

        async def heal() -> None:
            while flaky.exports == 0:  # noqa: ASYNC110 - the emulator only counts
                await asyncio.sleep(0.01)
            flaky.drop_during_export = False

        healer = asyncio.create_task(heal())
        response = await client.post("/backups/run", json={}, headers=headers)
        job_id = (await response.get_json())["job_id"]
        for _ in range(300):
            job = await (await client.get(f"/jobs/{job_id}", headers=headers)).get_json()
            if job["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        await healer
    assert (job["status"], job["total"], job["done"]) == ("succeeded", 3, 3)
    assert flaky.exports == 2
    [failure] = job["failed"]
    assert failure["device_id"] == ids[2]
    assert failure["reason"] == "timed out after 1 s"
    assert failure["attempts"] == 2
    listed = await (await client.get(f"/devices/{ids[1]}/backups", headers=headers)).get_json()
    assert len(listed["backups"]) == 1


async def test_isp_backup_from_the_cli_backs_up_the_fleet(
    settings: Settings, client: Any, tokens: Tokens
) -> None:
    from tests.test_cli import cli_env, isp

    headers = auth(tokens.operator)
    async with RouterFleet(3) as fleet:
        fleet[2].state.permissions_denied = True  # a router that refuses: a clear failure
        ids = [
            await add_device(client, headers, router, f"cli{i}", "secret")
            for i, router in enumerate(fleet)
        ]
        env = cli_env(settings.database_url, settings.data_dir.parent)
        code, out, err = await isp("backup", "--all", env=env)
        assert code == 1, err
        assert "backed up 2 of 3 devices; 1 failed" in out
        assert f"device {ids[2]}:" in err
        code, out, err = await isp("backup", "--device", str(ids[0]), env=env)
        assert code == 0, err
        assert "backed up 1 of 1 devices; 0 failed" in out
    listed = await (await client.get(f"/devices/{ids[0]}/backups", headers=headers)).get_json()
    assert [b["changed"] for b in listed["backups"] if b["kind"] == "export"] == [False, True]
    code, _, err = await isp("backup", env=env)
    assert code == 2
    assert "--all" in err
