"""A real HTTP/1.1 server on loopback that plays the SMS gateway and records what it got.

The transport matters here (timeouts, refused connections, status codes), so the plugin
talks to a socket, not a mock. One request per connection (``Connection: close``).
``scenario`` picks the answer:

- ``ok``: 200 ``{"id": "abc"}``
- ``error``: 500 with a short text body
- ``echo``: 401 whose body repeats the request's token and body (a careless gateway)
- ``badjson``: 200 with a body that is not JSON
- ``noid``: 200 ``{"status": "queued"}``
- ``stall``: reads the request and never answers (until the server stops)

``refusals``: that many requests first get the ``error`` answer, whatever the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

OK_ID = "abc"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeGateway:
    scenario: str = "ok"
    refusals: int = 0
    requests: list[Request] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/messages"

    async def __aenter__(self) -> FakeGateway:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        for writer in list(self._writers):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            request = await self._read(reader)
            if request is None:
                return
            self.requests.append(request)
            answer = self._answer(request)
            if answer is None:  # stall: hold the connection open, say nothing
                await self._stop.wait()
                return
            status, body = answer
            reason = {200: "OK", 401: "Unauthorized", 500: "Internal Server Error"}[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (its timeout): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self._handlers.discard(task)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, path, headers, body)

    def _answer(self, request: Request) -> tuple[int, bytes] | None:
        if self.refusals > 0:
            self.refusals -= 1
            return 500, b'{"error": "upstream SMSC unavailable"}'
        if self.scenario == "ok":
            return 200, json.dumps({"id": OK_ID}).encode()
        if self.scenario == "error":
            return 500, b'{"error": "upstream SMSC unavailable"}'
        if self.scenario == "echo":
            echoed = {
                "authorization": request.headers.get("authorization"),
                "body": request.body.decode(),
            }
            return 401, json.dumps(echoed).encode()
        if self.scenario == "badjson":
            return 200, b"<html>queued</html>"
        if self.scenario == "noid":
            return 200, b'{"status": "queued"}'
        if self.scenario == "stall":
            return None
        raise AssertionError(f"unknown scenario {self.scenario!r}")


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/messages"
