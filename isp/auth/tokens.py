"""API tokens: issued once in clear, stored as SHA256, looked up by hash.

The format ``isp_<prefix>_<secret>`` lets operators recognise a token in a config file;
the prefix alone is kept in clear so lists and logs can name a token safely.

A lookup is one query (token, user and roles joined). Its answer is kept in a small
in-process cache for ``ttl`` seconds (``ISP_PLUGIN_SYNC_INTERVAL``), so a read costs no
query for the token at all: a token revoked on this instance is dropped from the cache
at once, one revoked elsewhere is refused here once its entry is older than the
interval. Expiry is checked on every request, cached or not. Admin-scoped requests
always read the database (``fresh=True``): a user whose role lost ``admin`` loses the
admin reach on the next request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tortoise.connection import get_connection

from isp.auth import permissions as perms
from isp.auth.models import ApiToken, User
from isp.errors import NotFound, Unauthorized, ValidationFailed

TOKEN_PREFIX: Final = "isp_"
MAX_EXPIRY_DAYS: Final = 3650
LAST_USED_GRANULARITY: Final = timedelta(minutes=1)
CACHE_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user, the token's scopes (expanded) and the user's permissions."""

    user_id: int
    user_name: str
    token_prefix: str
    scopes: frozenset[str]
    permissions: frozenset[str]
    expires_at: datetime | None = None


class TokenCache:
    """Principals by token hash for at most ``ttl`` seconds (see the module docstring).

    ``generation`` moves on every ``forget`` and ``clear``: a lookup that read the row
    before a revocation here and answers after it must not put the old answer back."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self.generation = 0
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token_hash: str) -> Principal | None:
        found = self._entries.get(token_hash)
        if found is None:
            return None
        if time.monotonic() - found[0] >= self.ttl:
            del self._entries[token_hash]
            return None
        return found[1]

    def put(self, token_hash: str, principal: Principal, generation: int) -> None:
        """Keep ``principal`` unless something was forgotten since ``generation``."""
        if generation != self.generation:
            return
        if len(self._entries) >= CACHE_LIMIT:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic(), principal)

    def forget(self, prefixes: set[str]) -> None:
        self.generation += 1
        for key in [k for k, (_, p) in self._entries.items() if p.token_prefix in prefixes]:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


token_cache = TokenCache()
"""This process's cache; the app sets its ``ttl`` from ``ISP_PLUGIN_SYNC_INTERVAL``."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in perms.SCOPES]
    if unknown:
        raise ValidationFailed(
            f"unknown scope {unknown[0]!r}; known scopes: {', '.join(perms.SCOPES)}",
            errors=[{"loc": ["scope"], "msg": f"unknown scope {s!r}"} for s in unknown],
        )
    return sorted(set(scopes))


def check_expiry_days(days: int | None) -> datetime | None:
    if days is None:
        return None
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise ValidationFailed(
            f"expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}",
            errors=[{"loc": ["expires_in_days"], "msg": f"must be 1 to {MAX_EXPIRY_DAYS}"}],
        )
    return datetime.now(UTC) + timedelta(days=days)


async def issue_token(user_name: str, scopes: list[str], expires_in_days: int | None = None) -> str:
    """Create a token for ``user_name``; the clear token is returned once and never stored."""
    token, _ = await create_token(user_name, scopes, expires_in_days)
    return token


async def create_token(
    user_name: str, scopes: list[str], expires_in_days: int | None = None
) -> tuple[str, ApiToken]:
    scopes = check_scopes(scopes or ["read", "write"])
    expires_at = check_expiry_days(expires_in_days)
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
    record = await ApiToken.create(
        user=user, token_hash=hash_token(token), prefix=prefix, scopes=scopes, expires_at=expires_at
    )
    return token, record


async def user_permissions(user: User) -> frozenset[str]:
    granted: set[str] = set()
    for role in await user.roles.all():
        granted |= set(role.permissions)
    return frozenset(granted)


_LOOKUP: Final = (
    "SELECT t.id AS token_id, t.prefix, t.scopes, t.revoked_at, t.expires_at, t.last_used_at, "
    "u.id AS user_id, u.name AS user_name, r.permissions "
    "FROM auth_token t JOIN auth_user u ON u.id = t.user_id "
    "LEFT JOIN auth_user_role ur ON ur.auth_user_id = u.id "
    "LEFT JOIN auth_role r ON r.id = ur.role_id "
    "WHERE t.token_hash = {}"
)


async def authenticate(token: str, *, fresh: bool = False) -> Principal:
    """The principal behind a bearer token, or Unauthorized (see the module docstring)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("invalid token")
    key = hash_token(token)
    principal = None if fresh else token_cache.get(key)
    if principal is None:
        generation = token_cache.generation
        principal = await _lookup(key)
        token_cache.put(key, principal, generation)
    if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
        raise Unauthorized(f"token {principal.token_prefix} expired at {principal.expires_at}")
    return principal


async def _lookup(key: str) -> Principal:
    conn = get_connection("default")
    placeholder = "$1" if conn.capabilities.dialect == "postgres" else "?"
    _, rows = await conn.execute_query(_LOOKUP.format(placeholder), [key])
    if not rows:
        raise Unauthorized("invalid or revoked token")
    first = rows[0]
    if first["revoked_at"] is not None:
        raise Unauthorized("invalid or revoked token")
    granted: set[str] = set()
    for row in rows:
        if row["permissions"] is not None:
            granted |= set(_json(row["permissions"]))
    last_used = _datetime(first["last_used_at"])
    now = datetime.now(UTC)
    if last_used is None or now - last_used >= LAST_USED_GRANULARITY:
        await ApiToken.filter(id=first["token_id"]).update(last_used_at=now)
    return Principal(
        user_id=int(first["user_id"]),
        user_name=str(first["user_name"]),
        token_prefix=str(first["prefix"]),
        scopes=perms.expand_scopes(list(_json(first["scopes"]))),
        permissions=frozenset(granted),
        expires_at=_datetime(first["expires_at"]),
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def revoke_tokens(prefix: str, user_id: int | None) -> int:
    """Revoke the live tokens with ``prefix`` (of ``user_id`` unless None); how many."""
    query = ApiToken.filter(prefix=prefix, revoked_at__isnull=True)
    if user_id is not None:
        query = query.filter(user_id=user_id)
    count = await query.update(revoked_at=datetime.now(UTC))
    token_cache.forget({prefix})
    return int(count)
