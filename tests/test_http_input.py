"""Bounded, strictly typed input: what a client sends too much of, or of the wrong type."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart.typing import TestClientProtocol as Client

from isp.core.models import Device
from isp.errors import MAX_LISTED
from tests.conftest import Tokens, auth
from tests.core.test_api import create_records
from tests.plugins.builders import Server, admin_token, server_env


def _refs(ids: dict[str, Any]) -> dict[str, Any]:
    return {key: ids[key] for key in ("customer_id", "plan_id", "device_id")}


async def _problem(response: Any, status: int) -> dict[str, Any]:
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    assert response.mimetype == "application/problem+json"
    problem: dict[str, Any] = json.loads(body)
    return problem


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("download_mbps", True),
        ("download_mbps", "5"),
        ("download_mbps", 2.0),
        ("upload_mbps", False),
    ],
)
async def test_plan_rates_are_integers_not_booleans_strings_or_floats(
    client: Client, tokens: Tokens, field: str, value: Any
) -> None:
    body = {"name": "home-50", "download_mbps": 50, "upload_mbps": 10, field: value}
    problem = await _problem(
        await client.post("/plans", json=body, headers=auth(tokens.operator)), 422
    )
    assert problem["errors"][0]["loc"] == ["body", field]
    listed = await client.get("/plans", headers=auth(tokens.operator))
    assert (await listed.get_json())["plans"] == []


@pytest.mark.parametrize("value", [True, "1", 1.0])
async def test_ids_and_ports_are_strict_integers(
    client: Client, tokens: Tokens, value: Any
) -> None:
    ids = await create_records(client, tokens.operator)
    service = {**_refs(ids), "customer_id": value, "username": "u1", "password": "pw-12345"}
    problem = await _problem(
        await client.post("/services", json=service, headers=auth(tokens.operator)), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "customer_id"]
    device = {"name": "edge-9", "vendor": "mikrotik", "host": "192.0.2.9", "port": value,
              "username": "admin", "password": "secret-1"}  # fmt: skip
    problem = await _problem(
        await client.post("/devices", json=device, headers=auth(tokens.operator)), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "port"]
    run = await client.post(
        "/backups/run", json={"device_ids": [value]}, headers=auth(tokens.operator)
    )
    assert (await _problem(run, 422))["errors"][0]["loc"] == ["body", "device_ids", 0]


async def test_a_service_password_with_a_nul_is_refused_on_create_and_patch(
    client: Client, tokens: Tokens
) -> None:
    ids = await create_records(client, tokens.operator)
    body = {**_refs(ids), "username": "u1", "password": "pw\x00-12345"}
    problem = await _problem(
        await client.post("/services", json=body, headers=auth(tokens.operator)), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "password"]
    patched = await client.patch(
        f"/services/{ids['service_id']}", json={"password": "x\x00y"}, headers=auth(tokens.operator)
    )
    assert (await _problem(patched, 422))["errors"][0]["loc"] == ["body", "password"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("::1", "::1"), ("2001:db8::1", "2001:db8::1"), ("[2001:DB8:0::7]", "2001:db8::7"),
     ("router-1.example.net", "router-1.example.net"), ("192.0.2.7", "192.0.2.7")],
)  # fmt: skip
async def test_device_hosts_may_be_ipv6_addresses(
    client: Client, tokens: Tokens, sent: str, stored: str
) -> None:
    body = {"name": "edge", "vendor": "mikrotik", "host": sent, "username": "admin",
            "password": "secret-1"}  # fmt: skip
    created = await client.post("/devices", json=body, headers=auth(tokens.operator))
    assert created.status_code == 201, await created.get_data(as_text=True)
    assert (await created.get_json())["host"] == stored
    device_id = (await created.get_json())["id"]
    patched = await client.patch(
        f"/devices/{device_id}", json={"host": "2001:db8::2"}, headers=auth(tokens.operator)
    )
    assert (await patched.get_json())["host"] == "2001:db8::2"


@pytest.mark.parametrize("host", ["2001:db8:::1", "::g", "-router", "a..b", "[::1"])
async def test_malformed_hosts_are_refused(client: Client, tokens: Tokens, host: str) -> None:
    body = {"name": "edge", "vendor": "mikrotik", "host": host, "username": "admin",
            "password": "secret-1"}  # fmt: skip
    problem = await _problem(
        await client.post("/devices", json=body, headers=auth(tokens.operator)), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "host"]


async def test_unknown_device_ids_list_the_first_twenty_and_a_count(
    client: Client, tokens: Tokens
) -> None:
    ids = await create_records(client, tokens.operator)
    unknown = list(range(1_000_000, 1_009_999))  # with the known one: the most a body lists
    run = await client.post(
        "/backups/run",
        json={"device_ids": [ids["device_id"], *unknown]},
        headers=auth(tokens.operator),
    )
    problem = await _problem(run, 422)
    assert len(problem["errors"]) == MAX_LISTED
    assert problem["error_count"] == len(unknown)
    assert problem["errors"][0] == {
        "loc": ["body", "device_ids", 1],
        "msg": f"no device with id {unknown[0]}",
    }
    assert len(problem["detail"]) < 400
    assert len(await run.get_data()) < 10_000


async def test_ten_thousand_wrongly_typed_ids_give_a_small_answer(
    client: Client, tokens: Tokens
) -> None:
    run = await client.post(
        "/backups/run", json={"device_ids": [True] * 10_000}, headers=auth(tokens.operator)
    )
    problem = await _problem(run, 422)
    assert len(problem["errors"]) == MAX_LISTED
    assert problem["error_count"] == 10_000
    assert "and 9980 more" in problem["detail"]
    assert len(await run.get_data()) < 10_000


async def test_more_than_ten_thousand_device_ids_are_refused_small(
    client: Client, tokens: Tokens
) -> None:
    run = await client.post(
        "/backups/run",
        json={"device_ids": list(range(1, 100_001))},
        headers=auth(tokens.operator),
    )
    problem = await _problem(run, 422)
    assert problem["errors"][0]["loc"] == ["body", "device_ids"]
    assert "10000" in problem["errors"][0]["msg"]
    assert len(await run.get_data()) < 10_000


async def test_ten_thousand_known_device_ids_start_one_job(client: Client, tokens: Tokens) -> None:
    await Device.bulk_create(
        [
            Device(
                name=f"d{i}", vendor="mikrotik", host="192.0.2.1", username="u", password_enc="x"
            )  # fmt: skip
            for i in range(10_000)
        ]
    )
    known = list(await Device.all().values_list("id", flat=True))
    run = await client.post(
        "/backups/run", json={"device_ids": known}, headers=auth(tokens.operator)
    )
    assert run.status_code == 202, await run.get_data(as_text=True)


async def test_json_bodies_over_the_limit_are_413(client: Client, tokens: Tokens) -> None:
    padding = "x" * (1024 * 1024)
    response = await client.post(
        "/customers", json={"name": "Ada", "address": padding}, headers=auth(tokens.operator)
    )
    problem = await _problem(response, 413)
    assert "ISP_MAX_BODY" in problem["detail"]
    settings = await client.put(
        "/plugins/nothing/settings", json={"a": padding}, headers=auth(tokens.admin)
    )
    assert settings.status_code in (404, 413)  # 404 first: no such plugin


def _rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (its VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class _Answer(asyncio.Protocol):
    """What a server sends back on a raw connection, kept even if the connection then
    breaks (a stream reader drops what it buffered when it sees the reset)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.status_line = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"\r\n" in self.received:
            self.status_line.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.status_line.set()


async def _post_big(port: int, token: str, body: bytes, *, chunked: bool) -> tuple[int, int]:
    """POST ``body`` to ``/backups/run`` 64 KiB at a time over a raw connection, as a
    client that stops sending once the server has answered: (status, body bytes sent)."""
    loop = asyncio.get_running_loop()
    _, answer = await loop.create_connection(_Answer, "127.0.0.1", port)
    assert answer.transport is not None
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    answer.transport.write(
        f"POST /backups/run HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
    )
    sent = 0
    try:
        for start in range(0, len(body), 64 * 1024):
            piece = body[start : start + 64 * 1024]
            answer.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answer.status_line.wait(), 0.02)
            if answer.status_line.is_set():
                break
        else:
            if chunked:
                answer.transport.write(b"0\r\n\r\n")
        await asyncio.wait_for(answer.status_line.wait(), 30)
    finally:
        answer.transport.abort()
    return int(bytes(answer.received).split()[1]), sent


async def test_huge_bodies_are_refused_early_and_cost_the_server_no_memory(
    tmp_path: Path,
) -> None:
    env = server_env(tmp_path)
    token = await admin_token(env)
    server = Server(env)
    await server.start()
    try:
        await server.ready(60)
        assert server.process is not None
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as client:
            url = f"{server.url}/backups/run"
            for _ in range(3):  # warm: the routes, the token cache, the allocator
                assert (await client.post(url, json={"device_ids": [1]})).status_code == 422
            before = _rss_mb(server.process.pid)
            sixteen = b'{"device_ids": [' + b"1, " * (16 * 1024 * 1024 // 3) + b"1]}"
            answers = await asyncio.gather(
                *(_post_big(server.port, token, sixteen, chunked=False) for _ in range(6)),
                *(_post_big(server.port, token, sixteen, chunked=True) for _ in range(2)),
            )
            after = _rss_mb(server.process.pid)
            assert [status for status, _ in answers] == [413] * 8
            assert all(sent < len(sixteen) for _, sent in answers), answers  # answered early
            assert after - before < 50, (before, after)

            million = json.dumps({"device_ids": list(range(1, 1_000_001))}).encode()
            assert (await _post_big(server.port, token, million, chunked=True))[0] == 413
            start = time.perf_counter()
            assert (await client.get(f"{server.url}/healthz")).status_code == 200
            assert time.perf_counter() - start < 0.5
    finally:
        await server.stop()
