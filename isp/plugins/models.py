"""What the database knows of each plugin: shared by every instance, survives restarts."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.models import Model


class PluginRecord(Model):
    """Enabled/disabled state, installed version and checksum of one plugin.

    ``quarantined``: why the plugin's hooks are held (a hook outlived its deadline), until
    an admin enables it again; shared, so every instance holds them.
    """

    name = fields.CharField(max_length=64, primary_key=True)
    version = fields.CharField(max_length=64, null=True)
    sha256 = fields.CharField(max_length=64, null=True)
    tree_sha256 = fields.CharField(max_length=64, null=True)
    source = fields.CharField(max_length=16, default="local")
    enabled = fields.BooleanField(default=True)
    quarantined = fields.TextField(null=True)
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
