"""API tokens: issued once in clear, stored as SHA256, looked up by hash.

The format ``isp_<prefix>_<secret>`` lets operators recognise a token in a config file;
the prefix alone is kept in clear so lists and logs can name a token safely.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from isp.auth import permissions as perms
from isp.auth.models import ApiToken, User
from isp.errors import NotFound, Unauthorized, ValidationFailed

TOKEN_PREFIX = "isp_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user, the token's scopes (expanded) and the user's permissions."""

    user_id: int
    user_name: str
    token_prefix: str
    scopes: frozenset[str]
    permissions: frozenset[str]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(user_name: str, scopes: list[str]) -> str:
    """Create a token for ``user_name``; the clear token is returned once and never stored."""
    scopes = sorted(set(scopes or ["read", "write"]))
    unknown = [s for s in scopes if s not in perms.SCOPES]
    if unknown:
        raise ValidationFailed(
            f"unknown scope {unknown[0]!r}; known scopes: {', '.join(perms.SCOPES)}",
            errors=[{"loc": ["scope"], "msg": f"unknown scope {s!r}"} for s in unknown],
        )
    user = await User.get_or_none(name=user_name).prefetch_related("roles")
    if user is None:
        raise NotFound(f"no user named {user_name!r}")
    granted = await user_permissions(user)
    if "admin" in scopes and not perms.has_permission(granted, perms.ADMIN_ACCESS):
        raise ValidationFailed(
            f"user {user_name!r} has no role granting 'admin'; cannot issue an admin-scoped token",
            errors=[{"loc": ["scope"], "msg": "admin scope needs the admin permission"}],
        )
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    await ApiToken.create(user=user, token_hash=hash_token(token), prefix=prefix, scopes=scopes)
    return token


async def user_permissions(user: User) -> frozenset[str]:
    granted: set[str] = set()
    for role in await user.roles.all():
        granted |= set(role.permissions)
    return frozenset(granted)


async def authenticate(token: str) -> Principal:
    """The principal behind a bearer token, or Unauthorized."""
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthorized("invalid token")
    record = await ApiToken.get_or_none(token_hash=hash_token(token)).prefetch_related("user")
    if record is None or record.revoked_at is not None:
        raise Unauthorized("invalid or revoked token")
    user = record.user
    return Principal(
        user_id=user.id,
        user_name=user.name,
        token_prefix=record.prefix,
        scopes=perms.expand_scopes(list(record.scopes)),
        permissions=await user_permissions(user),
    )
