"""Backups are encrypted at rest in the object store (S3 here, moto's server over HTTP).

The API still answers clear text (content and diffs), digests and ``changed`` are over the
clear text, and objects stored before encryption existed stay readable.
"""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart

from isp.config import Settings
from isp.core.models import Backup, BackupKind
from tests.conftest import Tokens, s3_settings
from tests.mikrotik.test_end_to_end import World, configure, make_world
from tests.routeros import RouterOSServer, RouterState


@pytest.fixture
def settings(settings: Settings, s3_reset: str) -> Settings:
    return Settings.model_validate({**dict(settings), **s3_settings(s3_reset)})


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


async def stored_objects(app: Quart, device_id: int) -> dict[str, bytes]:
    parts = app.extensions["isp"]
    bucket = parts.settings.s3_backups_bucket
    listed = await parts.store.list(bucket, f"devices/{device_id}/")
    return {item.key: await parts.store.get(bucket, item.key) for item in listed}


async def test_objects_in_the_store_are_encrypted_and_the_api_answers_clear_text(
    world: World, state: RouterState, app: Quart
) -> None:
    assert (await world.move("provision")).status_code == 200
    response = await world.backup()
    assert response.status_code == 201, await response.get_json()
    objects = await stored_objects(app, world.device_id)
    assert len(objects) == 2
    for data in objects.values():
        assert b"pppoe-pw" not in data
        assert b"RouterOS" not in data
        assert not data.startswith(b"# ")
    backups = {b["kind"]: b for b in await world.backups()}
    export = await world.client.get(
        f"/backups/{backups['export']['id']}/content", headers=world.headers
    )
    text = await export.get_data(as_text=True)
    assert "password=pppoe-pw" in text
    assert backups["export"]["size"] == len(text.encode())
    binary = await world.client.get(
        f"/backups/{backups['binary']['id']}/content", headers=world.headers
    )
    assert len(await binary.get_data()) == backups["binary"]["size"]


async def test_digests_and_diffs_are_over_the_clear_text(
    world: World, state: RouterState, tokens: Tokens
) -> None:
    await configure(world.client, tokens, binary_backup=False)
    first = await (await world.backup()).get_json()
    second = await (await world.backup()).get_json()
    assert second["changed"] is False  # the ciphertexts differ, the configuration does not
    assert second["sha256"] == first["sha256"]
    state.add_secret("bob", password="pw")
    third = await (await world.backup()).get_json()
    diff = await world.client.get(f"/backups/{third['id']}/diff", headers=world.headers)
    text = await diff.get_data(as_text=True)
    assert any(line.startswith("+") and "name=bob" in line for line in text.splitlines()), text


async def test_an_object_stored_unencrypted_stays_readable(
    world: World, tokens: Tokens, app: Quart
) -> None:
    await configure(world.client, tokens, binary_backup=False)
    parts = app.extensions["isp"]
    bucket = parts.settings.s3_backups_bucket
    old_text = b"# 2025-01-01 00:00:00 by RouterOS 7.15.2\r\n/ppp secret\r\nadd name=old\r\n"
    key = f"devices/{world.device_id}/20250101T000000000000Z-export-0123456789abcdef.rsc"
    await parts.store.put(bucket, key, old_text)  # as the service wrote it before
    old = await Backup.create(
        device_id=world.device_id,
        kind=BackupKind.EXPORT,
        sha256="0" * 64,
        size=len(old_text),
        changed=True,
        object_key=key,
    )
    content = await world.client.get(f"/backups/{old.id}/content", headers=world.headers)
    assert await content.get_data() == old_text
    new = await (await world.backup()).get_json()
    diff = await world.client.get(
        f"/backups/{new['id']}/diff?against={old.id}", headers=world.headers
    )
    assert diff.status_code == 200
    lines = (await diff.get_data(as_text=True)).splitlines()
    assert "-add name=old" in lines
