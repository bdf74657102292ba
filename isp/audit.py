"""The audit log: who changed what, when, from which version to which.

Administrative changes (plugins installed, upgraded, enabled, disabled, uninstalled,
their settings changed, a device's host key re-trusted) each write one entry in the
transaction of the change, so an entry exists exactly when the change committed. Values
of settings never go in: only the names of the fields changed.
"""

from __future__ import annotations

from typing import Any, Final

from quart import Blueprint
from quart_schema import tag
from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from isp.auth.guard import require
from isp.http_input import query_id
from isp.openapi import ID_SCHEMA, document, query_param

AUDIT_PAGE: Final = 100


class AuditEntry(Model):
    """An administrative change: who did what, when, from which version to which."""

    id = fields.IntField(primary_key=True)
    at = fields.DatetimeField(auto_now_add=True)
    actor = fields.CharField(max_length=64)
    action = fields.CharField(max_length=32)
    plugin = fields.CharField(max_length=64, null=True)
    from_version = fields.CharField(max_length=64, null=True)
    to_version = fields.CharField(max_length=64, null=True)
    sha256 = fields.CharField(max_length=64, null=True)
    detail: dict[str, Any] = fields.JSONField(default=dict)

    class Meta:
        table = "audit_entry"
        app = "core"


async def record(
    conn: BaseDBAsyncClient, actor: str, action: str, plugin: str | None = None, **values: Any
) -> None:
    """Write one entry through ``conn``, the transaction of the change it describes."""
    await AuditEntry.create(actor=actor, action=action, plugin=plugin, using_db=conn, **values)


bp = Blueprint("audit", __name__)


@bp.get("/audit")
@tag(["audit"])
@require("admin")
@document(query=(query_param("before", ID_SCHEMA, "older entries than this id"),))
async def list_audit() -> dict[str, Any]:
    """Administrative changes, newest first (``?before=<id>`` pages back)."""
    query = AuditEntry.all().order_by("-id").limit(AUDIT_PAGE)
    before = query_id("before")
    if before is not None:
        query = query.filter(id__lt=before)
    entries = await query
    return {
        "entries": [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "plugin": e.plugin,
                "from_version": e.from_version,
                "to_version": e.to_version,
                "sha256": e.sha256,
                "detail": e.detail,
            }
            for e in entries
        ]
    }
