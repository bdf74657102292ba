"""The SMS gateway's HTTP API, and the one boundary where its failures are translated.

Protocol: ``POST <gateway_url>`` with JSON ``{"to", "from", "text"}``,
``Authorization: Bearer <api_token>`` (no header without a token) and
``Idempotency-Key: <delivery id>``; a 2xx answer carries
JSON ``{"id": ...}``, the gateway's message id.

Every way the call can fail (timeout, refused connection, TLS, a non-2xx status, a
body that is not ``{"id"}``) becomes :class:`GatewayError` with a short reason that
never contains the token or the gateway URL (which may carry credentials). The timeout
is one deadline for the whole call, connect and read included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import httpx

from .settings import SmsSettings

MAX_ID: Final = 128
_EXCERPT: Final = 200


class GatewayError(Exception):
    """The gateway did not accept the message; ``reason`` is safe to log and store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def send(
    settings: SmsSettings,
    to: str,
    text: str,
    *,
    secrets: Sequence[str] = (),
    idempotency_key: str | None = None,
) -> str:
    """Hand one text to the gateway and return its message id.

    ``secrets`` (a PPPoE password in the text) are redacted from error reasons as the
    token is: a gateway may echo the request in its error body. ``idempotency_key``
    goes out as the ``Idempotency-Key`` header: the same for every attempt of one
    delivery, so a gateway that deduplicates sends the text once.

    Raises:
        GatewayError: for any failure, with the token and ``secrets`` redacted.
    """
    if settings.gateway_url is None:
        raise GatewayError("gateway_url is not configured")
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    hidden = tuple(s for s in (token, *secrets) if s)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    body = {"to": to, "from": settings.sender, "text": text}
    try:
        async with asyncio.timeout(settings.timeout):
            async with httpx.AsyncClient(
                timeout=settings.timeout, follow_redirects=False
            ) as client:
                response = await client.post(str(settings.gateway_url), json=body, headers=headers)
    except (TimeoutError, httpx.TimeoutException):
        raise GatewayError(f"gateway did not answer within {settings.timeout:g} s") from None
    except httpx.HTTPError as exc:
        # The exception's text can hold the URL; its type and the OS reason are enough.
        raise GatewayError(_redact(f"cannot reach the gateway: {_cause(exc)}", hidden)) from None
    return _message_id(response, hidden)


def _message_id(response: httpx.Response, hidden: Sequence[str]) -> str:
    if not response.is_success:
        # Redact before cutting: a cut through a secret would leave its first half behind.
        excerpt = " ".join(_redact(response.text, hidden).split())[:_EXCERPT]
        reason = f"gateway answered HTTP {response.status_code}"
        raise GatewayError(f"{reason}: {excerpt}" if excerpt else reason)
    try:
        data: Any = response.json()
    except ValueError:  # not JSON, or not text
        raise GatewayError(
            f"gateway answered HTTP {response.status_code} without a JSON body"
        ) from None
    found = data.get("id") if isinstance(data, dict) else None
    if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
        raise GatewayError(f"gateway answered HTTP {response.status_code} without an id")
    return str(found)[:MAX_ID]


def _cause(exc: httpx.HTTPError) -> str:
    """``ConnectError ([Errno 111] Connection refused)``: the type and the innermost reason."""
    inner: BaseException = exc
    for _ in range(10):  # chains are short; the bound guards against a cycle
        following = inner.__cause__ or inner.__context__
        if following is None:
            break
        inner = following
    reason = str(inner) if inner is not exc else ""
    return f"{type(exc).__name__} ({reason})" if reason else type(exc).__name__


def _redact(text: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "********")
    return text
