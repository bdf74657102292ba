"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
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
    """200 when the database and the object store answer, else 503 problem+json."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await get_connection("default").execute_query("SELECT 1")
    except (TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure means not ready
        raise DatabaseUnavailable(
            f"the database does not answer: {type(exc).__name__}", check="database"
        ) from exc
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await components().store.ping()
    except TimeoutError as exc:
        raise StorageError("the object store does not answer", check="object_store") from exc
    except ISPError as exc:
        raise StorageError(
            f"the object store does not answer: {exc.detail}", check="object_store"
        ) from exc
    return {"status": "ready", "database": "ok", "object_store": "ok"}
