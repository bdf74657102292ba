"""Backup health: last complete backup and last error per device, and the stale filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isp.core.backup_health import backup_fields, parse_stale_query, stale
from isp.core.models import Device
from isp.errors import ValidationFailed
from tests.conftest import Tokens, auth
from tests.mikrotik.test_end_to_end import add_device
from tests.routeros import RouterFleet


async def stale_ids(hours: float, now: datetime | None = None) -> list[int]:
    return [d.id for d in await stale(Device.all().order_by("id"), hours, now=now)]


async def test_health_follows_single_and_fleet_backups(client: Any, tokens: Tokens) -> None:
    headers = auth(tokens.operator)
    async with RouterFleet(3) as fleet:
        fleet[1].state.permissions_denied = True  # the binary step fails: not complete
        good, refusing, untouched = [
            await add_device(client, headers, router, f"h{i}", "secret")
            for i, router in enumerate(fleet)
        ]
        assert await stale_ids(1) == [good, refusing, untouched]  # never backed up

        assert (await client.post(f"/devices/{good}/backup", headers=headers)).status_code == 201
        refused = await client.post(f"/devices/{refusing}/backup", headers=headers)
        assert refused.status_code >= 400

        first = await Device.get(id=good)
        fields = backup_fields(first)
        assert fields["last_backup_error"] is None
        assert datetime.now(UTC) - fields["last_backup_at"] < timedelta(minutes=1)
        failed = backup_fields(await Device.get(id=refusing))
        assert failed["last_backup_at"] is None
        assert failed["last_backup_error"] == (await refused.get_json())["detail"]
        assert await stale_ids(1) == [refusing, untouched]
        later = datetime.now(UTC) + timedelta(hours=2)
        assert await stale_ids(1, now=later) == [good, refusing, untouched]

        # a fleet job records health too; the refusing router's error stays, the good
        # router's time moves on, a failure never clears an earlier complete backup
        fleet[1].state.permissions_denied = False
        fleet[0].state.permissions_denied = True
        job = await client.post("/backups/run", json={"device_ids": [good, refusing]},
                                headers=headers)  # fmt: skip
        job_id = (await job.get_json())["job_id"]
        parts = client.app.extensions["isp"]
        finished = await parts.jobs.wait(job_id)
        assert [f["device_id"] for f in finished.failed] == [good]
        now_good = backup_fields(await Device.get(id=good))
        assert now_good["last_backup_at"] == fields["last_backup_at"]
        assert now_good["last_backup_error"] == finished.failed[0]["reason"]
        healed = backup_fields(await Device.get(id=refusing))
        assert healed["last_backup_error"] is None
        assert healed["last_backup_at"] is not None
        assert await stale_ids(1) == [untouched]


def test_stale_query_is_read_with_errors_naming_the_parameter() -> None:
    assert parse_stale_query({}, 26) is None
    assert parse_stale_query({"backup": "stale"}, 26) == 26
    assert parse_stale_query({"backup": "stale", "hours": "48"}, 26) == 48
    for args, where in (
        ({"backup": "fresh"}, "backup"),
        ({"backup": "stale", "hours": "soon"}, "hours"),
        ({"backup": "stale", "hours": "0"}, "hours"),
        ({"backup": "stale", "hours": "nan"}, "hours"),
        ({"hours": "3"}, "hours"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            parse_stale_query(args, 26)
        assert caught.value.extra["errors"][0]["loc"] == ["query", where]


async def test_devices_list_shows_health_and_filters_stale_ones(
    client: Any, tokens: Tokens
) -> None:
    headers = auth(tokens.operator)
    async with RouterFleet(2) as fleet:
        backed_up, never = [
            await add_device(client, headers, router, f"list{i}", "secret")
            for i, router in enumerate(fleet)
        ]
        assert (
            await client.post(f"/devices/{backed_up}/backup", headers=headers)
        ).status_code == 201

        listed = await (await client.get("/devices", headers=headers)).get_json()
        by_id = {d["id"]: d for d in listed["devices"]}
        assert by_id[backed_up]["last_backup_at"] is not None
        assert by_id[backed_up]["last_backup_error"] is None
        assert by_id[never]["last_backup_at"] is None

        stale_page = await client.get("/devices?backup=stale&hours=1", headers=headers)
        assert stale_page.status_code == 200
        assert [d["id"] for d in (await stale_page.get_json())["devices"]] == [never]
        # with no hours, ISP_BACKUP_STALE_HOURS applies (26 by default): same answer
        default = await (await client.get("/devices?backup=stale", headers=headers)).get_json()
        assert [d["id"] for d in default["devices"]] == [never]

        for query, field in (("backup=fresh", "backup"), ("backup=stale&hours=-1", "hours"),
                             ("hours=3", "hours")):  # fmt: skip
            bad = await client.get(f"/devices?{query}", headers=headers)
            assert bad.status_code == 422, query
            assert field in str((await bad.get_json())["errors"]), query
