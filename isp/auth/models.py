"""Users, roles and API tokens. Tokens are stored as SHA256 hashes, never in clear."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Role(Model):
    """A named set of permission strings (plugins:manage, services:write ...)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    permissions: list[str] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "auth_role"


class User(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    roles: fields.ManyToManyRelation[Role] = fields.ManyToManyField(
        "core.Role", related_name="users", through="auth_user_role"
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "auth_user"


class ApiToken(Model):
    """An API token: only its SHA256 is kept, and prefix identifies it in lists and logs."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "core.User", related_name="tokens", on_delete=fields.CASCADE
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=16)
    scopes: list[str] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    user_id: int

    class Meta:
        table = "auth_token"
