"""HTTP -> workflow -> commit -> outbox -> sms_gateway hook -> HTTP gateway on loopback,
SQLite and PostgreSQL.

Whatever the gateway does, provisioning succeeds; texts go out only after the commit,
a refused one is retried; the message log says what happened.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.core.test_api import PPPOE_PASSWORD, create_records
from tests.plugins.builders import eventually
from tests.sms_gateway.gateway_server import OK_ID, FakeGateway, closed_port_url

TOKEN = "tok-Very-Secret-123"
PHONE = "+442079460000"  # create_records' "+44 20 7946 0000", normalised


async def configure(client: Client, tokens: Tokens, **values: Any) -> dict[str, Any]:
    """Change the plugin's settings the way an operator does."""
    response = await client.put(
        "/plugins/sms_gateway/settings", json=values, headers=auth(tokens.admin)
    )
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, body
    return body


async def move(client: Client, tokens: Tokens, service_id: int, action: str) -> dict[str, Any]:
    response = await client.post(f"/services/{service_id}/{action}", headers=auth(tokens.operator))
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, body
    return body


async def messages() -> list[dict[str, Any]]:
    """The plugin's message log, read with SQL (independent of the plugin's model class)."""
    from tortoise import connections

    rows = await connections.get("default").execute_query_dict(
        'SELECT service_id, customer_id, event, "to", text, status, gateway_id, error '
        "FROM sms_gateway_message ORDER BY id"
    )
    return [dict(row) for row in rows]


async def outbox_rows() -> list[dict[str, Any]]:
    from tortoise import connections

    rows = await connections.get("default").execute_query_dict(
        "SELECT key, plugin, status, attempts FROM outbox WHERE plugin = 'sms_gateway' "
        "ORDER BY id"
    )
    return [dict(row) for row in rows]


async def settled(count: int, within: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the plugin's ``count`` deliveries are done (delivered or failed)."""

    async def done() -> list[dict[str, Any]] | None:
        rows = await outbox_rows()
        finished = len(rows) == count and all(r["status"] != "pending" for r in rows)
        return rows if finished else None

    found: list[dict[str, Any]] = await eventually(done, within=within)
    return found


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def assert_no_secrets(logs: pytest.LogCaptureFixture) -> None:
    for record in logs.records:
        line = record.getMessage() + repr(record.__dict__)
        assert TOKEN not in line
        assert PPPOE_PASSWORD not in line


async def test_provisioning_sends_a_welcome_text_and_records_it(
    client: Client, tokens: Tokens, gateway: FakeGateway, logs: pytest.LogCaptureFixture
) -> None:
    await configure(client, tokens, gateway_url=gateway.url, api_token=TOKEN, sender="AcmeNet")
    ids = await create_records(client, tokens.operator)

    assert (await move(client, tokens, ids["service_id"], "provision"))["status"] == "active"

    [row] = await settled(1)
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    [request] = gateway.requests  # exactly one text
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["idempotency-key"] == row["key"]
    body = request.json()
    assert body["to"] == PHONE
    assert body["from"] == "AcmeNet"
    assert "PPPoE login: ada.pppoe" in body["text"]
    assert "Ada Subscriber" in body["text"]
    assert PPPOE_PASSWORD not in body["text"]
    assert await messages() == [
        {
            "service_id": ids["service_id"],
            "customer_id": ids["customer_id"],
            "event": "provision",
            "to": PHONE,
            "text": body["text"],
            "status": "sent",
            "gateway_id": OK_ID,
            "error": None,
        }
    ]
    assert_no_secrets(logs)


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        ("error", 'gateway answered HTTP 500: {"error": "upstream SMSC unavailable"}'),
        ("stall", "gateway did not answer within 0.5 s"),
        ("badjson", "gateway answered HTTP 200 without a JSON body"),
        ("refused", "cannot reach the gateway: ConnectError"),
    ],
)
async def test_a_failing_gateway_never_blocks_provisioning_and_is_retried(
    client: Client,
    tokens: Tokens,
    gateway: FakeGateway,
    logs: pytest.LogCaptureFixture,
    scenario: str,
    error: str,
) -> None:
    url = closed_port_url() if scenario == "refused" else gateway.url
    gateway.scenario = "ok" if scenario == "refused" else scenario
    await configure(client, tokens, gateway_url=url, api_token=TOKEN, timeout=0.5)
    ids = await create_records(client, tokens.operator)

    start = time.perf_counter()
    assert (await move(client, tokens, ids["service_id"], "provision"))["status"] == "active"
    assert time.perf_counter() - start < 5

    current = await client.get(f"/services/{ids['service_id']}", headers=auth(tokens.operator))
    assert (await current.get_json())["status"] == "active"
    [row] = await settled(1, within=20)
    assert (row["status"], row["attempts"]) == ("failed", 3)  # ISP_OUTBOX_ATTEMPTS=3
    if scenario != "refused":
        assert len(gateway.requests) == 3
        assert {r.headers["idempotency-key"] for r in gateway.requests} == {row["key"]}
    [message] = await messages()
    assert message["status"] == "failed"
    assert message["gateway_id"] is None
    assert message["error"].startswith(error)
    assert TOKEN not in message["error"]
    assert_no_secrets(logs)


async def test_a_text_the_gateway_refused_is_retried_and_sent_once(
    client: Client, tokens: Tokens, gateway: FakeGateway
) -> None:
    await configure(client, tokens, gateway_url=gateway.url, api_token=TOKEN)
    gateway.refusals = 1
    ids = await create_records(client, tokens.operator)
    await move(client, tokens, ids["service_id"], "provision")

    [row] = await settled(1)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    refused, sent = gateway.requests
    assert refused.json() == sent.json()
    assert refused.headers["idempotency-key"] == sent.headers["idempotency-key"] == row["key"]
    [message] = await messages()
    assert (message["status"], message["gateway_id"], message["error"]) == ("sent", OK_ID, None)


async def test_suspend_and_resume_send_texts_too(
    client: Client, tokens: Tokens, gateway: FakeGateway
) -> None:
    await configure(client, tokens, gateway_url=gateway.url, api_token=TOKEN)
    ids = await create_records(client, tokens.operator)
    for action in ("provision", "suspend", "resume"):
        await move(client, tokens, ids["service_id"], action)

    await settled(3)
    texts = [request.json()["text"] for request in gateway.requests]
    assert len(texts) == 3
    assert "is suspended" in texts[1]
    assert "is active again" in texts[2]
    assert all("ada.pppoe" in text for text in texts)
    recorded = await messages()
    assert [(m["event"], m["status"], m["text"]) for m in recorded] == [
        ("provision", "sent", texts[0]),
        ("suspend", "sent", texts[1]),
        ("resume", "sent", texts[2]),
    ]


async def test_include_password_sends_it_but_the_log_keeps_it_masked(
    client: Client, tokens: Tokens, gateway: FakeGateway, logs: pytest.LogCaptureFixture
) -> None:
    await configure(client, tokens, gateway_url=gateway.url, include_password=True)
    ids = await create_records(client, tokens.operator)
    await move(client, tokens, ids["service_id"], "provision")
    await settled(1)

    assert gateway.requests[0].json()["text"].endswith(f"Password: {PPPOE_PASSWORD}")
    [message] = await messages()
    assert PPPOE_PASSWORD not in message["text"]
    assert message["text"].endswith("Password: ********")
    assert_no_secrets(logs)
    from tortoise import connections

    [row] = await connections.get("default").execute_query_dict("SELECT * FROM outbox")
    stored = repr(dict(row))
    assert PPPOE_PASSWORD not in stored  # the outbox names the service, never its secret
    assert "password" not in stored


async def test_a_customer_without_a_phone_is_skipped(
    client: Client, tokens: Tokens, gateway: FakeGateway
) -> None:
    await configure(client, tokens, gateway_url=gateway.url)
    ids = await create_records(client, tokens.operator)
    customer = await client.post(
        "/customers", json={"name": "No Phone"}, headers=auth(tokens.operator)
    )
    service = await client.post(
        "/services",
        json={
            "customer_id": (await customer.get_json())["id"],
            "plan_id": ids["plan_id"],
            "device_id": ids["device_id"],
            "username": "nophone.pppoe",
            "password": "another-Secret-1",
        },
        headers=auth(tokens.operator),
    )
    assert service.status_code == 201, await service.get_data(as_text=True)

    await move(client, tokens, (await service.get_json())["id"], "provision")

    [row] = await settled(1)
    assert row["status"] == "delivered"  # skipped is an outcome, not a failure to retry
    assert gateway.requests == []
    [message] = await messages()
    assert message["status"] == "skipped"
    assert message["to"] is None
    assert message["error"] == "the customer has no usable phone number"


async def test_without_a_gateway_url_nothing_is_sent_and_the_message_is_skipped(
    client: Client, tokens: Tokens, gateway: FakeGateway
) -> None:
    ids = await create_records(client, tokens.operator)
    assert (await move(client, tokens, ids["service_id"], "provision"))["status"] == "active"
    await settled(1)
    assert gateway.requests == []
    [message] = await messages()
    assert (message["status"], message["error"]) == ("skipped", "gateway_url is not configured")


async def test_settings_show_the_token_masked_and_refuse_a_password_template(
    client: Client, tokens: Tokens
) -> None:
    shown = await configure(client, tokens, api_token=TOKEN)
    assert shown["values"]["api_token"] == "********"
    refused = await client.put(
        "/plugins/sms_gateway/settings",
        json={"provision_template": "{username} {password}"},
        headers=auth(tokens.admin),
    )
    assert refused.status_code == 422
    problem = await refused.get_json()
    assert problem["errors"][0]["loc"] == ["body", "provision_template"]
    assert "include_password" in problem["detail"]


@pytest.fixture
def gateway_from_env(monkeypatch: pytest.MonkeyPatch, gateway: FakeGateway) -> FakeGateway:
    """The deployment pins the gateway through the environment, before the app starts."""
    monkeypatch.setenv("ISP_PLUGIN_SMS_GATEWAY__GATEWAY_URL", gateway.url)
    monkeypatch.setenv("ISP_PLUGIN_SMS_GATEWAY__API_TOKEN", TOKEN)
    return gateway


@pytest.fixture
def app_with_env(gateway_from_env: FakeGateway, app: Quart) -> Quart:
    return app


async def test_the_environment_configures_the_gateway(
    app_with_env: Quart, client: Client, tokens: Tokens, gateway_from_env: FakeGateway
) -> None:
    ids = await create_records(client, tokens.operator)
    await move(client, tokens, ids["service_id"], "provision")
    await settled(1)
    [request] = gateway_from_env.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert [m["status"] for m in await messages()] == ["sent"]


GATEKEEPER = """
import asyncio
from isp.plugins import Plugin, PluginError, registry

plugin = Plugin()

@registry.hook("service_provision")
async def provision(service, db):
    await asyncio.sleep(0.3)  # long enough for a text sent inside the workflow to be out
    raise PluginError("no free port on the access router")
"""


@pytest.fixture
def gatekeeper(settings: Settings) -> Settings:
    """A second plugin whose critical provisioning hook refuses, on disk before start."""
    folder = settings.plugins_dir / "gatekeeper"
    folder.mkdir()
    (folder / "__init__.py").write_text(GATEKEEPER)
    manifest = {
        "name": "gatekeeper",
        "version": "1.0.0",
        "description": "refuses",
        "hooks": ["service_provision"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return settings


@pytest.mark.usefixtures("gatekeeper")
async def test_a_provision_that_rolled_back_sends_no_text(
    client: Client, tokens: Tokens, gateway: FakeGateway
) -> None:
    """The text waits for the commit: a refused provision leaves no delivery behind."""
    await configure(client, tokens, gateway_url=gateway.url)
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    assert response.status_code == 422
    assert (await response.get_json())["plugin"] == "gatekeeper"
    assert await outbox_rows() == []  # nothing committed, so nothing can be delivered
    assert gateway.requests == []
    assert await messages() == []
