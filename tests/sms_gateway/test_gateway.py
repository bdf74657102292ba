"""The gateway client against a real HTTP server on loopback: every outcome, no secrets."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.sms_gateway.gateway_server import OK_ID, FakeGateway, closed_port_url
from tests.sms_gateway.loaded import gateway as client
from tests.sms_gateway.loaded import settings as settings_module

TOKEN = "tok-Very-Secret-123"


def sms_settings(url: str | None, **values: Any) -> Any:
    return settings_module.SmsSettings(gateway_url=url, api_token=TOKEN, sender="AcmeNet", **values)


async def test_success_posts_json_with_bearer_token_and_returns_the_gateway_id(
    gateway: FakeGateway,
) -> None:
    found = await client.send(sms_settings(gateway.url), "+442079460000", "hello")
    assert found == OK_ID
    [request] = gateway.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"to": "+442079460000", "from": "AcmeNet", "text": "hello"}


async def test_no_token_sends_no_authorization_header(gateway: FakeGateway) -> None:
    settings = settings_module.SmsSettings(gateway_url=gateway.url)
    assert await client.send(settings, "+442079460000", "hello") == OK_ID
    assert "authorization" not in gateway.requests[0].headers


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("error", 'gateway answered HTTP 500: {"error": "upstream SMSC unavailable"}'),
        ("badjson", "gateway answered HTTP 200 without a JSON body"),
        ("noid", "gateway answered HTTP 200 without an id"),
    ],
)
async def test_bad_answers_become_gateway_errors(
    gateway: FakeGateway, scenario: str, reason: str
) -> None:
    gateway.scenario = scenario
    with pytest.raises(client.GatewayError) as caught:
        await client.send(sms_settings(gateway.url), "+442079460000", "hello")
    assert caught.value.reason == reason


async def test_an_echoed_token_and_password_are_redacted_from_the_error(
    gateway: FakeGateway,
) -> None:
    gateway.scenario = "echo"
    with pytest.raises(client.GatewayError) as caught:
        await client.send(
            sms_settings(gateway.url),
            "+442079460000",
            "pw pppoe-Secret-77",
            secrets=("pppoe-Secret-77",),
        )
    reason = caught.value.reason
    assert reason.startswith("gateway answered HTTP 401")
    assert TOKEN not in reason
    assert "pppoe-Secret-77" not in reason
    assert reason.count("********") == 2
    assert len(reason) <= 260


async def test_a_gateway_that_never_answers_fails_within_the_timeout(
    gateway: FakeGateway,
) -> None:
    gateway.scenario = "stall"
    start = time.perf_counter()
    with pytest.raises(client.GatewayError) as caught:
        await client.send(sms_settings(gateway.url, timeout=0.3), "+442079460000", "hello")
    assert time.perf_counter() - start < 2
    assert caught.value.reason == "gateway did not answer within 0.3 s"
    assert len(gateway.requests) == 1


async def test_a_refused_connection_is_a_gateway_error_without_the_url() -> None:
    url = closed_port_url()
    with pytest.raises(client.GatewayError) as caught:
        await client.send(sms_settings(url, timeout=2), "+442079460000", "hello")
    assert caught.value.reason.startswith("cannot reach the gateway: ConnectError")
    assert "/v1/messages" not in caught.value.reason
    assert TOKEN not in caught.value.reason


async def test_an_unconfigured_gateway_is_an_error_not_a_crash() -> None:
    with pytest.raises(client.GatewayError, match="gateway_url is not configured"):
        await client.send(settings_module.SmsSettings(), "+442079460000", "hello")
