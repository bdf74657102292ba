"""What the database knows of each plugin: shared by every instance, survives restarts."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class PluginRecord(Model):
    """Enabled/disabled state, installed version and checksum of one plugin."""

    name = fields.CharField(max_length=64, primary_key=True)
    version = fields.CharField(max_length=64, null=True)
    sha256 = fields.CharField(max_length=64, null=True)
    source = fields.CharField(max_length=16, default="local")
    enabled = fields.BooleanField(default=True)
    settings: dict[str, Any] = fields.JSONField(default=dict)
    installed_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "plugin_record"
