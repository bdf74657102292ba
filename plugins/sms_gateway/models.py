"""The message log: one row per text the plugin sent, failed to send or skipped.

Rows are written through the workflow's connection, so they commit (or roll back) with
the service change they describe. ``service_id`` and ``customer_id`` are plain indexed
integers, not foreign keys: the log outlives the records it mentions and the plugin's
migrations need nothing from the core's.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class Status(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class Message(Model):
    """One SMS about a service change and what became of it (text has no password)."""

    id = fields.IntField(primary_key=True)
    service_id = fields.IntField(db_index=True)
    customer_id = fields.IntField(db_index=True)
    event = fields.CharField(max_length=16)
    to = fields.CharField(max_length=32, null=True)
    text = fields.TextField()
    status = fields.CharField(max_length=16)
    gateway_id = fields.CharField(max_length=128, null=True)
    error = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sms_gateway_message"
