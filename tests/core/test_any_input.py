"""No input makes the service answer 500: ids, bodies, encodings, NULs, methods."""

from __future__ import annotations

import pytest
from quart.typing import TestClientProtocol as Client

from tests.conftest import Tokens, auth
from tests.core.test_api import create_records

HUGE = str(2**70)
PG_INT_MAX_PLUS_1 = str(2**31)


@pytest.mark.parametrize("big", [HUGE, PG_INT_MAX_PLUS_1])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/customers/{}"),
        ("get", "/plans/{}"),
        ("get", "/devices/{}"),
        ("get", "/services/{}"),
        ("get", "/devices/{}/backups"),
        ("get", "/backups/{}/content"),
        ("post", "/services/{}/provision"),
        ("post", "/devices/{}/backup"),
        ("patch", "/customers/{}"),
        ("delete", "/plans/{}"),
    ],
)
async def test_path_ids_beyond_the_database_integer_are_404(
    client: Client, tokens: Tokens, method: str, path: str, big: str
) -> None:
    call = getattr(client, method)
    kwargs = {"json": {"name": "x"}} if method == "patch" else {}
    response = await call(path.format(big), headers=auth(tokens.admin), **kwargs)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("big", [2**70, 2**31])
async def test_body_and_query_ids_beyond_the_database_integer_are_422(
    client: Client, tokens: Tokens, big: int
) -> None:
    ids = await create_records(client, tokens.operator)
    body = {**{k: ids[k] for k in ("customer_id", "plan_id")}, "device_id": big}
    created = await client.post(
        "/services",
        json={**body, "username": "u1", "password": "pw-12345"},
        headers=auth(tokens.operator),
    )
    assert created.status_code == 422
    assert (await created.get_json())["errors"][0]["loc"] == ["body", "device_id"]
    run = await client.post(
        "/backups/run", json={"device_ids": [big]}, headers=auth(tokens.operator)
    )
    assert run.status_code == 422
    for query in (f"customer_id={big}", f"after={big}"):
        listed = await client.get(f"/services?{query}", headers=auth(tokens.operator))
        assert listed.status_code == 422
    audit = await client.get(f"/audit?before={big}", headers=auth(tokens.admin))
    assert audit.status_code == 422


async def test_deep_json_is_400(client: Client, tokens: Tokens) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = await client.post(
        "/customers",
        data=deep,
        headers={**auth(tokens.operator), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "nested deeper" in (await response.get_json())["detail"]


async def test_body_not_utf8_is_400(client: Client, tokens: Tokens) -> None:
    response = await client.post(
        "/customers",
        data=b'{"name": "\xff\xfe"}',
        headers={**auth(tokens.operator), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "UTF-8" in (await response.get_json())["detail"]


@pytest.mark.parametrize(
    ("content_type", "data", "status"),
    [
        (None, "", 415),
        ("text/plain", '{"name": "x"}', 415),
        ("application/x-www-form-urlencoded", "name=x", 415),
        ("application/json", "", 400),
        ("application/json", "{not json", 400),
    ],
)
async def test_empty_or_non_json_bodies_say_send_json(
    client: Client, tokens: Tokens, content_type: str | None, data: str, status: int
) -> None:
    headers = auth(tokens.operator)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post("/customers", data=data, headers=headers)
    assert response.status_code == status
    problem = await response.get_json()
    assert "send JSON with Content-Type: application/json" in problem["detail"]
    assert "Error" not in problem["detail"]


async def test_nul_characters_are_422(client: Client, tokens: Tokens) -> None:
    response = await client.post(
        "/customers", json={"name": "Ada\x00"}, headers=auth(tokens.operator)
    )
    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"] == ["body", "name"]
    keyed = await client.post("/customers", json={"na\x00me": "x"}, headers=auth(tokens.operator))
    assert keyed.status_code == 422
    query = await client.get("/customers?q=a%00b", headers=auth(tokens.operator))
    assert query.status_code == 422
    assert (await query.get_json())["errors"][0]["loc"] == ["query", "q"]


async def test_405_carries_allow(client: Client, tokens: Tokens) -> None:
    response = await client.put("/customers", headers=auth(tokens.operator))
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert response.mimetype == "application/problem+json"


async def test_over_long_fields_are_422_not_a_database_error(
    client: Client, tokens: Tokens
) -> None:
    response = await client.post(
        "/customers",
        json={"name": "Ada", "email": "a" * 300 + "@example.net"},
        headers=auth(tokens.operator),
    )
    assert response.status_code == 422
    search = await client.get(
        "/customers", query_string={"q": "x" * 500}, headers=auth(tokens.operator)
    )
    assert search.status_code == 422
