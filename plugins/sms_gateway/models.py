"""The message log: one row per text the plugin sent, failed to send or skipped.

One row per delivery of an after-commit hook (``delivery_key``, the outbox's idempotency
key), written after the service change committed and updated by each retry.
``service_id`` and ``customer_id`` are plain indexed integers, not foreign keys: the log
outlives the records it mentions and the plugin's migrations need nothing from the core's.
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
    delivery_key = fields.CharField(max_length=36, null=True, db_index=True)
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
