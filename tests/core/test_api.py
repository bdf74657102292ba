"""The core API over HTTP: records, the service lifecycle and every error status."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from tests.conftest import Tokens, auth

pytestmark = pytest.mark.usefixtures("app")

ROUTER_PASSWORD = "r0uter-Pa55word!"
PPPOE_PASSWORD = "pppoe-Secret-77"


async def create_records(client: Client, token: str) -> dict[str, Any]:
    customer = await client.post(
        "/customers",
        json={"name": "Ada Subscriber", "email": "ada@example.net", "phone": "+44 20 7946 0000"},
        headers=auth(token),
    )
    assert customer.status_code == 201, await customer.get_data(as_text=True)
    plan = await client.post(
        "/plans",
        json={"name": "home-50", "download_mbps": 50, "upload_mbps": 10},
        headers=auth(token),
    )
    assert plan.status_code == 201, await plan.get_data(as_text=True)
    device = await client.post(
        "/devices",
        json={
            "name": "core-1",
            "vendor": "mikrotik",
            "host": "192.0.2.1",
            "port": 22,
            "username": "admin",
            "password": ROUTER_PASSWORD,
        },
        headers=auth(token),
    )
    assert device.status_code == 201, await device.get_data(as_text=True)
    ids = {
        "customer_id": (await customer.get_json())["id"],
        "plan_id": (await plan.get_json())["id"],
        "device_id": (await device.get_json())["id"],
    }
    service = await client.post(
        "/services",
        json={**ids, "username": "ada.pppoe", "password": PPPOE_PASSWORD},
        headers=auth(token),
    )
    assert service.status_code == 201, await service.get_data(as_text=True)
    body = await service.get_json()
    assert body["status"] == "pending"
    return {**ids, "service_id": body["id"], "device": await device.get_json()}


async def test_service_lifecycle_provision_suspend_resume_terminate(
    client: Client, tokens: Tokens
) -> None:
    ids = await create_records(client, tokens.operator)
    service = ids["service_id"]
    for action, status in [
        ("provision", "active"),
        ("suspend", "suspended"),
        ("resume", "active"),
        ("terminate", "terminated"),
    ]:
        response = await client.post(f"/services/{service}/{action}", headers=auth(tokens.operator))
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert (await response.get_json())["status"] == status
    current = await client.get(f"/services/{service}", headers=auth(tokens.operator))
    assert (await current.get_json())["status"] == "terminated"


async def test_illegal_move_is_409_and_changes_nothing(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/resume", headers=auth(tokens.operator)
    )
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert problem["status"] == 409
    assert "pending" in problem["detail"]
    current = await client.get(f"/services/{ids['service_id']}", headers=auth(tokens.operator))
    assert (await current.get_json())["status"] == "pending"


@pytest.mark.parametrize(
    "path", ["/services/9999/provision", "/services/9999", "/devices/9999/backups", "/jobs/0"]
)
async def test_unknown_id_is_404_problem(client: Client, tokens: Tokens, path: str) -> None:
    method = client.post if path.endswith("provision") else client.get
    response = await method(path, headers=auth(tokens.operator))
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert {"type", "title", "status", "detail"} <= problem.keys()


async def test_bad_body_is_422_naming_the_field(client: Client, tokens: Tokens) -> None:
    response = await client.post(
        "/plans",
        json={"name": "x", "download_mbps": -5, "upload_mbps": 10},
        headers=auth(tokens.operator),
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert ["body", "download_mbps"] in [e["loc"] for e in problem["errors"]]
    assert "download_mbps" in problem["detail"]


async def test_unknown_field_and_non_json_body_are_422(client: Client, tokens: Tokens) -> None:
    extra = await client.post(
        "/customers", json={"name": "A", "colour": "red"}, headers=auth(tokens.operator)
    )
    assert extra.status_code == 422
    assert ["body", "colour"] in [e["loc"] for e in (await extra.get_json())["errors"]]
    garbage = await client.post(
        "/customers",
        data=b"{not json",
        headers={**auth(tokens.operator), "Content-Type": "application/json"},
    )
    assert garbage.status_code in (400, 422)
    assert garbage.mimetype == "application/problem+json"


async def test_service_referring_to_missing_records_is_422_per_field(
    client: Client, tokens: Tokens
) -> None:
    response = await client.post(
        "/services",
        json={"customer_id": 41, "plan_id": 42, "device_id": 43, "username": "u", "password": "p"},
        headers=auth(tokens.operator),
    )
    assert response.status_code == 422
    locs = [e["loc"] for e in (await response.get_json())["errors"]]
    assert locs == [["body", "customer_id"], ["body", "plan_id"], ["body", "device_id"]]


async def test_no_token_is_401_and_bad_token_is_401(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer isp_nothing_here"}, {"Authorization": "Basic x"}):
        response = await client.post("/customers", json={"name": "A"}, headers=headers)
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_no_token_with_bad_body_is_still_401(client: Client) -> None:
    response = await client.post("/plans", json={"download_mbps": "lots"})
    assert response.status_code == 401


async def test_operator_token_on_admin_route_is_403(client: Client, tokens: Tokens) -> None:
    response = await client.get("/plugins", headers=auth(tokens.operator))
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    admin = await client.get("/plugins", headers=auth(tokens.admin))
    assert admin.status_code == 200


async def test_read_only_token_cannot_write(client: Client, tokens: Tokens) -> None:
    response = await client.post("/customers", json={"name": "A"}, headers=auth(tokens.reader))
    assert response.status_code == 403
    assert "write" in (await response.get_json())["detail"]


async def test_duplicate_plan_is_409(client: Client, tokens: Tokens) -> None:
    body = {"name": "biz-100", "download_mbps": 100, "upload_mbps": 100}
    first = await client.post("/plans", json=body, headers=auth(tokens.operator))
    assert first.status_code == 201
    again = await client.post("/plans", json=body, headers=auth(tokens.operator))
    assert again.status_code == 409


async def test_wrong_method_is_405_problem(client: Client) -> None:
    response = await client.delete("/customers")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"


async def test_router_password_never_leaves_the_server(
    client: Client, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = await create_records(client, tokens.operator)
    assert "password" not in ids["device"]
    shown = await client.get(f"/devices/{ids['device_id']}", headers=auth(tokens.operator))
    text = await shown.get_data(as_text=True)
    assert ROUTER_PASSWORD not in text
    await client.post(f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator))
    service = await client.get(f"/services/{ids['service_id']}", headers=auth(tokens.operator))
    assert PPPOE_PASSWORD not in await service.get_data(as_text=True)

    from tortoise.connection import get_connection

    _, rows = await get_connection("default").execute_query(
        "SELECT password_enc FROM device WHERE id = " + str(int(ids["device_id"]))
    )
    raw = rows[0]["password_enc"]
    assert ROUTER_PASSWORD not in raw
    assert len(raw) > 40
    _, rows = await get_connection("default").execute_query("SELECT password_enc FROM service")
    assert PPPOE_PASSWORD not in rows[0]["password_enc"]
    for record in caplog.records:
        assert ROUTER_PASSWORD not in record.getMessage()
        assert ROUTER_PASSWORD not in repr(vars(record))
        assert PPPOE_PASSWORD not in repr(vars(record))


async def test_tokens_are_stored_hashed(tokens: Tokens) -> None:
    from tortoise.connection import get_connection

    _, rows = await get_connection("default").execute_query(
        "SELECT token_hash, prefix FROM auth_token"
    )
    stored = " ".join(f"{r['token_hash']} {r['prefix']}" for r in rows)
    for token in (tokens.admin, tokens.operator, tokens.reader):
        assert token not in stored
        assert token.split("_", 2)[2] not in stored
    assert len(rows) == 3
    assert all(len(r["token_hash"]) == 64 for r in rows)


async def test_revoked_token_is_401(client: Client, tokens: Tokens) -> None:
    from datetime import UTC, datetime

    from isp.auth.models import ApiToken
    from isp.auth.tokens import hash_token

    await ApiToken.filter(token_hash=hash_token(tokens.operator)).update(
        revoked_at=datetime.now(UTC)
    )
    response = await client.get("/services/1", headers=auth(tokens.operator))
    assert response.status_code == 401


async def test_healthz_and_openapi_need_no_token(client: Client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert (await ready.get_json())["database"] == "ok"
    spec = await (await client.get("/openapi.json")).get_json()
    for path in ("/customers", "/services/{service_id}/provision", "/backups/run"):
        assert path in spec["paths"], path
