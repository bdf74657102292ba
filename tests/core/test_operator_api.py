"""The operator API over HTTP, on both databases: lists, edits, removals, forced ends."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.core.test_api import create_records


def write_plugin(root: Path, name: str, handlers: str, hooks: list[Any]) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("from isp.plugins import Plugin\n\nplugin = Plugin()\n")
    (folder / "handlers.py").write_text(textwrap.dedent(handlers))
    manifest = {
        "name": name,
        "version": "1.0.0",
        "description": f"{name} test plugin",
        "author": "tests",
        "hooks": hooks,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


async def make_customers(client: Client, token: str, names: list[str]) -> list[int]:
    ids = []
    for i, name in enumerate(names):
        response = await client.post(
            "/customers",
            json={"name": name, "email": f"c{i}@example.net", "phone": f"+1 555 {i:04d}"},
            headers=auth(token),
        )
        assert response.status_code == 201
        ids.append((await response.get_json())["id"])
    return ids


async def test_customers_page_by_id_and_search_name_email_phone(
    client: Client, tokens: Tokens
) -> None:
    ids = await make_customers(client, tokens.operator, [f"Name {i}" for i in range(7)] + ["Zoë"])
    seen: list[int] = []
    after = None
    while True:
        query = "/customers?limit=3" + (f"&after={after}" if after else "")
        body = await (await client.get(query, headers=auth(tokens.reader))).get_json()
        seen += [c["id"] for c in body["customers"]]
        assert len(body["customers"]) <= 3
        after = body["next"]
        if after is None:
            break
    assert seen == ids
    found = await client.get("/customers", query_string={"q": "ZOë"}, headers=auth(tokens.reader))
    assert [c["name"] for c in (await found.get_json())["customers"]] == ["Zoë"]
    by_email = await (
        await client.get("/customers?q=C3@EXAMPLE", headers=auth(tokens.reader))
    ).get_json()
    assert [c["id"] for c in by_email["customers"]] == [ids[3]]
    by_phone = await (
        await client.get("/customers?q=555 0005", headers=auth(tokens.reader))
    ).get_json()
    assert [c["id"] for c in by_phone["customers"]] == [ids[5]]
    default = await (await client.get("/customers", headers=auth(tokens.reader))).get_json()
    assert len(default["customers"]) == 8
    assert default["next"] is None


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=x", "after=-1", "after=99999999999999999999999", "after=0"],
)
async def test_bad_page_arguments_are_422_naming_the_parameter(
    client: Client, tokens: Tokens, query: str
) -> None:
    for path in ("/customers", "/plans", "/devices", "/services", "/tokens"):
        response = await client.get(f"{path}?{query}", headers=auth(tokens.reader))
        assert response.status_code == 422, (path, query)
        assert (await response.get_json())["errors"][0]["loc"][0] == "query"


async def test_lists_of_plans_devices_services_with_filters(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    other = await client.post(
        "/services",
        json={
            "customer_id": ids["customer_id"],
            "plan_id": ids["plan_id"],
            "device_id": ids["device_id"],
            "username": "bob.pppoe",
            "password": "secret-pass-1",
        },
        headers=auth(tokens.operator),
    )
    other_id = (await other.get_json())["id"]
    await client.post(f"/services/{other_id}/terminate", headers=auth(tokens.operator))
    reader = auth(tokens.reader)

    async def listed(path: str, key: str) -> list[int]:
        response = await client.get(path, headers=reader)
        assert response.status_code == 200, await response.get_data(as_text=True)
        return [row["id"] for row in (await response.get_json())[key]]

    assert await listed("/plans", "plans") == [ids["plan_id"]]
    assert await listed("/devices?vendor=mikrotik", "devices") == [ids["device_id"]]
    assert await listed("/devices?q=CORE", "devices") == [ids["device_id"]]
    assert await listed("/devices?q=192.0.2", "devices") == [ids["device_id"]]
    assert await listed("/devices?q=nothing", "devices") == []
    assert await listed("/services", "services") == [ids["service_id"], other_id]
    assert await listed("/services?status=terminated", "services") == [other_id]
    assert await listed("/services?status=pending", "services") == [ids["service_id"]]
    assert await listed(f"/services?customer_id={ids['customer_id']}", "services") == [
        ids["service_id"],
        other_id,
    ]
    assert await listed(f"/services?device_id={ids['device_id']}&limit=1", "services") == [
        ids["service_id"]
    ]
    assert await listed(f"/services?plan_id={ids['plan_id'] + 100}", "services") == []
    devices = await (await client.get("/devices", headers=reader)).get_json()
    assert "password" not in json.dumps(devices)
    assert "r0uter" not in json.dumps(devices)
    bad = await client.get("/services?status=gone", headers=reader)
    assert bad.status_code == 422
    assert (await client.get("/devices?vendor=cisco", headers=reader)).status_code == 422


async def test_jobs_list_newest_first_and_pages(client: Client, tokens: Tokens) -> None:
    from isp.core.models import Job

    jobs = [await Job.create(kind="backup") for _ in range(3)]
    body = await (await client.get("/jobs?limit=2", headers=auth(tokens.reader))).get_json()
    first = [j["id"] for j in body["jobs"]]
    assert len(first) == 2
    assert body["next"] == first[-1]
    rest = await client.get(f"/jobs?after={body['next']}", headers=auth(tokens.reader))
    second = [j["id"] for j in (await rest.get_json())["jobs"]]
    assert sorted(first + second) == sorted(str(j.id) for j in jobs)
    assert len(set(first + second)) == 3
    bad = await client.get("/jobs?after=not-a-uuid", headers=auth(tokens.reader))
    assert bad.status_code == 422


async def test_patch_customer_plan_device_service(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    customer = await client.patch(
        f"/customers/{ids['customer_id']}", json={"phone": None, "name": "Ada L."}, headers=op
    )
    assert customer.status_code == 200
    assert (await customer.get_json())["name"] == "Ada L."
    assert (await customer.get_json())["phone"] is None
    assert (await customer.get_json())["email"] == "ada@example.net"
    plan = await client.patch(f"/plans/{ids['plan_id']}", json={"download_mbps": 100}, headers=op)
    assert (await plan.get_json())["download_mbps"] == 100
    device = await client.patch(
        f"/devices/{ids['device_id']}",
        json={"host": "192.0.2.9", "password": "new-pass"},
        headers=op,
    )
    assert device.status_code == 200
    body = await device.get_json()
    assert body["host"] == "192.0.2.9"
    assert "password" not in body
    from isp.core.models import Device

    stored = await Device.get(id=ids["device_id"])
    assert stored.reveal_password() == "new-pass"
    second_plan = await client.post(
        "/plans", json={"name": "home-100", "download_mbps": 100, "upload_mbps": 20}, headers=op
    )
    new_plan = (await second_plan.get_json())["id"]
    service = await client.patch(
        f"/services/{ids['service_id']}", json={"plan_id": new_plan}, headers=op
    )
    assert (await service.get_json())["plan_id"] == new_plan
    missing = await client.patch(
        f"/services/{ids['service_id']}", json={"plan_id": 999999}, headers=op
    )
    assert missing.status_code == 422
    assert (await missing.get_json())["errors"][0]["loc"] == ["body", "plan_id"]
    for path, body_ in [
        (f"/customers/{ids['customer_id']}", {"name": None}),
        (f"/customers/{ids['customer_id']}", {"id": 5}),
        (f"/plans/{ids['plan_id']}", {"upload_mbps": 0}),
        (f"/plans/{ids['plan_id']}", {"name": "renamed"}),
        (f"/devices/{ids['device_id']}", {"vendor": "mikrotik"}),
        (f"/services/{ids['service_id']}", {"username": "other"}),
    ]:
        refused = await client.patch(path, json=body_, headers=op)
        assert refused.status_code == 422, (path, body_)
    assert (
        await client.patch("/customers/424242", json={"name": "x"}, headers=op)
    ).status_code == 404
    reader = await client.patch(
        f"/customers/{ids['customer_id']}", json={"name": "x"}, headers=auth(tokens.reader)
    )
    assert reader.status_code == 403


async def test_patch_device_name_taken_is_409(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    await client.post(
        "/devices",
        json={
            "name": "edge-2",
            "vendor": "mikrotik",
            "host": "192.0.2.2",
            "username": "admin",
            "password": "pw-123456",
        },
        headers=op,
    )
    taken = await client.patch(f"/devices/{ids['device_id']}", json={"name": "edge-2"}, headers=op)
    assert taken.status_code == 409


async def test_delete_refusals_name_what_is_in_the_way(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    service = ids["service_id"]
    await client.post(f"/services/{service}/provision", headers=op)
    for path in (f"/customers/{ids['customer_id']}", f"/devices/{ids['device_id']}"):
        refused = await client.delete(path, headers=op)
        assert refused.status_code == 409
        problem = await refused.get_json()
        assert str(service) in problem["detail"]
        assert problem["service_ids"] == [service]
    plan = await client.delete(f"/plans/{ids['plan_id']}", headers=op)
    assert plan.status_code == 409
    assert str(service) in (await plan.get_json())["detail"]
    active = await client.delete(f"/services/{service}", headers=op)
    assert active.status_code == 409
    assert "active" in (await active.get_json())["detail"]

    await client.post(f"/services/{service}/terminate", headers=op)
    # a terminated service goes with its customer; the plan is then free
    assert (await client.delete(f"/customers/{ids['customer_id']}", headers=op)).status_code == 204
    assert (await client.get(f"/services/{service}", headers=op)).status_code == 404
    assert (await client.delete(f"/plans/{ids['plan_id']}", headers=op)).status_code == 204
    assert (await client.delete(f"/devices/{ids['device_id']}", headers=op)).status_code == 204
    assert (await client.get(f"/devices/{ids['device_id']}", headers=op)).status_code == 404
    assert (await client.delete(f"/devices/{ids['device_id']}", headers=op)).status_code == 404


async def test_pending_service_can_be_deleted(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    assert (await client.delete(f"/services/{ids['service_id']}", headers=op)).status_code == 204
    assert (await client.get(f"/services/{ids['service_id']}", headers=op)).status_code == 404


async def test_device_with_backups_needs_purge(client: Client, tokens: Tokens, app: Any) -> None:
    from isp.context import EXTENSION_KEY
    from isp.core.models import Backup, BackupKind

    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    await client.delete(f"/services/{ids['service_id']}", headers=op)
    parts = app.extensions[EXTENSION_KEY]
    key = f"devices/{ids['device_id']}/x-export.rsc"
    await parts.store.put(parts.settings.s3_backups_bucket, key, b"/export")
    await Backup.create(
        device_id=ids["device_id"], kind=BackupKind.EXPORT, sha256="0" * 64, size=7, object_key=key
    )
    kept = await client.delete(f"/devices/{ids['device_id']}", headers=op)
    assert kept.status_code == 409
    assert "purge=true" in (await kept.get_json())["detail"]
    assert await Backup.filter(device_id=ids["device_id"]).count() == 1
    purged = await client.delete(f"/devices/{ids['device_id']}?purge=true", headers=op)
    assert purged.status_code == 204
    assert await Backup.filter(device_id=ids["device_id"]).count() == 0
    assert not await parts.store.exists(parts.settings.s3_backups_bucket, key)


FAILING_TERMINATE = """
from isp.plugins import PluginError, registry

@registry.hook("service_terminate")
async def terminate(service, db):
    await db.execute_query(
        "INSERT INTO customer (name, created_at) VALUES ('written-by-hook', CURRENT_TIMESTAMP)"
    )
    raise PluginError("router 192.0.2.1 is gone")
"""


@pytest.fixture
def failing_terminate(settings: Settings) -> None:
    write_plugin(settings.plugins_dir, "gone", FAILING_TERMINATE, ["service_terminate"])


@pytest.fixture
def failing_app(failing_terminate: None, app: Any) -> Any:
    return app


async def test_force_terminate_ends_a_service_whose_router_is_gone(
    failing_app: Any, client: Client, tokens: Tokens
) -> None:
    from isp.core.models import Customer

    ids = await create_records(client, tokens.operator)
    service = ids["service_id"]
    plain = await client.post(f"/services/{service}/terminate", headers=auth(tokens.operator))
    assert plain.status_code == 422
    assert (await plain.get_json())["plugin"] == "gone"
    not_admin = await client.post(
        f"/services/{service}/terminate?force=true", headers=auth(tokens.operator)
    )
    assert not_admin.status_code == 403
    forced = await client.post(
        f"/services/{service}/terminate?force=true", headers=auth(tokens.admin)
    )
    assert forced.status_code == 200, await forced.get_data(as_text=True)
    body = await forced.get_json()
    assert body["status"] == "terminated"
    assert [(f["plugin"], f["reason"]) for f in body["hook_failures"]] == [
        ("gone", "router 192.0.2.1 is gone")
    ]
    assert (body["hook_failures"][0]["hook"], body["hook_failures"][0]["event"]) == (
        "handlers.terminate", "service_terminate"
    )
    assert await Customer.filter(name="written-by-hook").count() == 0
    audit = await (await client.get("/audit", headers=auth(tokens.admin))).get_json()
    entry = next(e for e in audit["entries"] if e["action"] == "service_force_terminate")
    assert entry["detail"]["service_id"] == service
    assert entry["detail"]["hook_failures"][0]["plugin"] == "gone"
    again = await client.post(
        f"/services/{service}/terminate?force=true", headers=auth(tokens.admin)
    )
    assert again.status_code == 409


async def test_force_terminate_without_failures_is_a_plain_termination(
    client: Client, tokens: Tokens
) -> None:
    ids = await create_records(client, tokens.operator)
    forced = await client.post(
        f"/services/{ids['service_id']}/terminate?force=true", headers=auth(tokens.admin)
    )
    assert forced.status_code == 200
    assert (await forced.get_json())["hook_failures"] == []


async def test_terminated_service_cannot_change(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    op = auth(tokens.operator)
    await client.post(f"/services/{ids['service_id']}/terminate", headers=op)
    refused = await client.patch(
        f"/services/{ids['service_id']}", json={"password": "another-pw"}, headers=op
    )
    assert refused.status_code == 409
    assert "terminated" in (await refused.get_json())["detail"]
