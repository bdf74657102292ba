"""The guard: ``@require(scope, permission)`` on a route checks the bearer token.

401 when the token is missing, invalid, expired or revoked, 403 when it lacks the scope or
the user lacks the permission (an ``admin`` scope also needs the ``admin`` permission, read
from the database on every such request). The caller is available as
:func:`current_principal` inside the route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from quart import g, request

from isp.auth import permissions as perms
from isp.auth.tokens import Principal, authenticate
from isp.errors import Forbidden, Unauthorized

P = ParamSpec("P")
R = TypeVar("R")


def require(
    scope: str, permission: str | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a route: the token needs ``scope``, its user needs ``permission``."""
    if scope not in perms.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(route: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(route)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = await _principal_from_request(fresh=scope == "admin")
            if scope not in principal.scopes:
                raise Forbidden(f"this token lacks the {scope!r} scope", scope=scope)
            if scope == "admin" and not perms.has_permission(
                principal.permissions, perms.ADMIN_ACCESS
            ):
                raise Forbidden(
                    f"user {principal.user_name!r} no longer has the {perms.ADMIN_ACCESS!r} "
                    "permission this admin-scoped token needs",
                    permission=perms.ADMIN_ACCESS,
                )
            if permission is not None and not perms.has_permission(
                principal.permissions, permission
            ):
                raise Forbidden(
                    f"user {principal.user_name!r} lacks the permission {permission!r}",
                    permission=permission,
                )
            g.principal = principal
            return await route(*args, **kwargs)

        guarded.__isp_scope__ = scope  # type: ignore[attr-defined]
        guarded.__isp_permission__ = permission  # type: ignore[attr-defined]
        return guarded

    return decorate


async def _principal_from_request(*, fresh: bool = False) -> Principal:
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return await authenticate(token.strip(), fresh=fresh)


def current_principal() -> Principal:
    principal: Any = g.get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("no authenticated caller")
    return principal
