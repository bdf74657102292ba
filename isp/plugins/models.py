"""What the database knows of each plugin: shared by every instance, survives restarts."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.models import Model


class PluginRecord(Model):
    """Enabled/disabled state, installed version and checksum of one plugin.

    ``quarantined``: why the plugin's hooks are held (a hook outlived its deadline, or its
    sandboxed worker crashed too often), until an admin enables it again; shared, so
    every instance holds them. ``granted``: the manifest ``permissions`` the operator
    granted at install (``?grant=network,secrets``).
    """

    name = fields.CharField(max_length=64, primary_key=True)
    version = fields.CharField(max_length=64, null=True)
    sha256 = fields.CharField(max_length=64, null=True)
    tree_sha256 = fields.CharField(max_length=64, null=True)
    source = fields.CharField(max_length=16, default="local")
    enabled = fields.BooleanField(default=True)
    quarantined = fields.TextField(null=True)
    granted: list[str] = fields.JSONField(default=list)
    settings: dict[str, Any] = fields.JSONField(default=dict)
    installed_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "plugin_record"


class PluginGeneration(Model):
    """One row whose counter every plugin change increments, in the change's transaction.

    Instances poll it to notice, cheaply, that another instance changed something.
    """

    id = fields.IntField(primary_key=True)
    value = fields.BigIntField(default=0)

    class Meta:
        table = "plugin_generation"

    @classmethod
    async def bump(cls, conn: BaseDBAsyncClient) -> None:
        """Tell every instance that plugin state changed (inside the change's transaction)."""
        if not await cls.filter(id=1).using_db(conn).update(value=F("value") + 1):
            await cls.create(id=1, value=1, using_db=conn)


class OutboxRow(Model):
    """One delivery owed to a plugin: an after-commit hook or a compensation to retry.

    Written in the transaction whose commit makes it due, so it exists exactly when that
    commit happened. It names the hook (plugin, function) and the event's object by
    reference (``subject_model``, ``subject_id``), never by value: a delivery reloads
    the object, so no secret is ever stored here. ``key`` is the idempotency key every
    attempt of the delivery carries; ``ordering_key`` groups the deliveries of one
    object, delivered one at a time in id (commit) order.

    ``claimed_by`` / ``lease_until``: the instance delivering it now, and until when its
    claim holds (a dead instance's claim lapses and another instance delivers).
    """

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=36, unique=True)
    kind = fields.CharField(max_length=32)
    event = fields.CharField(max_length=64)
    plugin = fields.CharField(max_length=64)
    hook = fields.CharField(max_length=255)
    subject_model = fields.CharField(max_length=128, null=True)
    subject_id = fields.CharField(max_length=64, null=True)
    relations: list[str] = fields.JSONField(default=list)
    args: dict[str, Any] = fields.JSONField(default=dict)
    ordering_key = fields.CharField(max_length=255)
    status = fields.CharField(max_length=16, default="pending")
    attempts = fields.IntField(default=0)
    attempt_limit = fields.IntField()
    next_attempt_at = fields.DatetimeField()
    claimed_by = fields.CharField(max_length=64, null=True)
    lease_until = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox"
        indexes = (("status", "ordering_key"), ("status", "next_attempt_at"))


class PluginValue(Model):
    """One key of a sandboxed plugin's key-value store (its hooks' ``db``).

    Written by the host on the workflow's connection, so a value commits or rolls back
    with the workflow that wrote it. ``value`` is JSON.
    """

    id = fields.BigIntField(primary_key=True)
    plugin = fields.CharField(max_length=64)
    key = fields.CharField(max_length=200)
    value: Any = fields.JSONField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "plugin_value"
        unique_together = (("plugin", "key"),)
