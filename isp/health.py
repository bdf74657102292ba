"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Blueprint
from tortoise.connection import get_connection

from isp.context import components
from isp.errors import DatabaseUnavailable, ISPError, StorageError
from isp.openapi import document

bp = Blueprint("health", __name__)

PROBE_TIMEOUT = 5.0


@bp.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


@bp.get("/readyz")
@document(statuses=(503,))
async def readyz() -> dict[str, Any]:
    """200 when the database and the object store answer, else 503 problem+json.

    Both are asked at once, so the answer comes within ``PROBE_TIMEOUT`` whatever hangs;
    when both fail, the database is named.
    """
    database, store = await asyncio.gather(_probe(_database), _probe(components().store.ping))
    if database is not None:
        raise DatabaseUnavailable(f"the database does not answer: {database}", check="database")
    if store is not None:
        raise StorageError(f"the object store does not answer: {store}", check="object_store")
    return {"status": "ready", "database": "ok", "object_store": "ok"}


async def _database() -> None:
    await get_connection("default").execute_query("SELECT 1")


async def _probe(check: Callable[[], Awaitable[None]]) -> str | None:
    """None when ``check`` succeeds within ``PROBE_TIMEOUT``, else why not."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await check()
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g} s"
    except ISPError as exc:
        return exc.detail
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return type(exc).__name__
    return None
