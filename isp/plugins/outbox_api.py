"""``/outbox``: the deliveries still owed (``pending``) or given up (``failed``), and retry.

A retry makes a ``failed`` (or waiting ``pending``) row due now with a fresh round of
``ISP_OUTBOX_ATTEMPTS`` attempts, and records who asked in the audit log, in the same
transaction.
"""

from __future__ import annotations

from typing import Any, Final

from quart import Blueprint, current_app, request
from quart_schema import tag
from tortoise.transactions import in_transaction

from isp import audit
from isp.auth.guard import current_principal, require
from isp.auth.permissions import PLUGINS_MANAGE
from isp.errors import Conflict, NotFound, ValidationFailed
from isp.openapi import JSON_OBJECT, document, query_param
from isp.pages import PAGE_PARAMS, fetch_page, page_args
from isp.plugins.models import OutboxRow
from isp.plugins.outbox import DELIVERED, FAILED, PENDING, STATUSES, Outbox, now

EXTENSION: Final = "isp.outbox"

bp = Blueprint("outbox", __name__, url_prefix="/outbox")

STATUS_PARAM: Final = query_param(
    "status", {"type": "string", "enum": list(STATUSES)}, "only rows in this status"
)
ROW_SCHEMA: Final = {
    "type": "object",
    "required": ["id", "event", "plugin", "hook", "attempts", "status", "last_error", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "key": {"type": "string", "description": "the idempotency key (delivery.id)"},
        "kind": {"type": "string"},
        "event": {"type": "string"},
        "plugin": {"type": "string"},
        "hook": {"type": "string"},
        "attempts": {"type": "integer"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "last_error": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "next_attempt_at": {"type": "string", "format": "date-time"},
        "delivered_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def outbox() -> Outbox:
    found = current_app.extensions[EXTENSION]
    if not isinstance(found, Outbox):  # pragma: no cover - wiring error
        raise TypeError(f"app.extensions[{EXTENSION!r}] is not an Outbox")
    return found


def row_out(row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "kind": row.kind,
        "event": row.event,
        "plugin": row.plugin,
        "hook": row.hook,
        "attempts": row.attempts,
        "status": row.status,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


@bp.get("")
@tag(["outbox"])
@require("admin")
@document(
    query=(STATUS_PARAM, *PAGE_PARAMS),
    responses={
        200: {
            "description": "one page of outbox rows in id order",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["outbox", "next"],
                        "properties": {
                            "outbox": {"type": "array", "items": ROW_SCHEMA},
                            "next": {"type": ["integer", "null"]},
                        },
                    }
                }
            },
        }
    },
)
async def list_outbox() -> dict[str, Any]:
    """Outbox rows in id order (``?status=pending|failed``; keyset pages)."""
    status = request.args.get("status")
    query = OutboxRow.all()
    if status is not None:
        if status not in STATUSES:
            raise ValidationFailed(
                f"query parameter 'status' must be one of {', '.join(STATUSES)}",
                errors=[{"loc": ["query", "status"], "msg": f"one of {', '.join(STATUSES)}"}],
            )
        query = query.filter(status=status)
    rows, after = await fetch_page(query, page_args())
    return {"outbox": [row_out(row) for row in rows], "next": after}


@bp.post("/<int:row_id>/retry")
@tag(["outbox"])
@require("admin", PLUGINS_MANAGE)
@document(
    statuses=(409,),
    responses={
        202: {"description": "due now; delivered shortly", "content": JSON_OBJECT},
    },
)
async def retry_outbox_row(row_id: int) -> tuple[dict[str, Any], int]:
    """Deliver a failed (or waiting) row again now, with a fresh round of attempts."""
    deliverer = outbox()
    actor = current_principal()
    async with in_transaction() as conn:
        row = await OutboxRow.select_for_update().using_db(conn).get_or_none(id=row_id)
        if row is None:
            raise NotFound(f"no outbox row with id {row_id}")
        if row.status == DELIVERED:
            raise Conflict(f"outbox row {row_id} was delivered already", status_now=row.status)
        previous = row.status
        row.status = PENDING
        row.attempt_limit = row.attempts + deliverer.attempts
        row.next_attempt_at = now()
        if previous == FAILED:
            row.claimed_by = None
            row.lease_until = None
        await row.save(
            using_db=conn,
            update_fields=[
                "status",
                "attempt_limit",
                "next_attempt_at",
                "claimed_by",
                "lease_until",
            ],
        )
        await audit.record(
            conn,
            actor.user_name,
            "outbox_retry",
            plugin=row.plugin,
            detail={
                "outbox_id": row.id,
                "event": row.event,
                "hook": row.hook,
                "attempts": row.attempts,
                "status": previous,
            },
        )
    deliverer.wake()
    return row_out(row), 202
