"""Frames between the host and a sandboxed worker: a 4-byte length, then one JSON object.

The frames travel over a socket pair of their own, never over the worker's stdout, so
whatever a plugin prints cannot corrupt them. Message types:

host -> worker: ``call`` {id, hook, subject, named}; ``cancel`` {id} (the caller gave
up: an ``async def`` hook is cancelled); ``kv_reply`` {id, value} or {id, error};
``settings`` {values} (the plugin's settings changed; sent before any later call).
worker -> host: ``ready`` {hooks, callbacks, settings: its settings' JSON schema};
``result`` {id, value}; ``error`` {id, kind, status, message} (kind ``plugin``: a
``PluginError``; ``crash``: any other exception);
``kv`` {id, call, op, key, value} (get / put / delete in the plugin's own store, run by
the host); ``log`` {level, message}.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import json
import struct
import uuid
from collections.abc import Mapping
from typing import Any, Final

HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 16 * 1024 * 1024


class ProtocolError(Exception):
    """A frame that is too large or not a JSON object: the peer is not speaking the protocol."""


def plain(value: Any) -> Any:
    """JSON's ``default``: dates, decimals, UUIDs and enums as their text, objects as dicts."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} cannot cross into the sandbox")


def encode(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, default=plain, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes is over the {MAX_FRAME} byte limit")
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer closed its end."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame is not an object with a 'type'")
    return message


def write_message(writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
    writer.write(encode(message))
