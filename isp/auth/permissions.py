"""The vocabulary of scopes and permissions, and the built-in roles.

A token's *scopes* (``read``, ``write``, ``admin``) limit what the token may do; the
user's *roles* grant *permissions*. A request passes when the token has the scope and
the user has the permission. ``*`` grants every permission.
"""

from __future__ import annotations

from typing import Final

SCOPES: Final = ("read", "write", "admin")
SCOPE_IMPLIES: Final[dict[str, frozenset[str]]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
}

ALL: Final = "*"
ADMIN_ACCESS: Final = "admin"
PLUGINS_MANAGE: Final = "plugins:manage"
CUSTOMERS_WRITE: Final = "customers:write"
PLANS_WRITE: Final = "plans:write"
DEVICES_WRITE: Final = "devices:write"
SERVICES_WRITE: Final = "services:write"
BACKUPS_WRITE: Final = "backups:write"

KNOWN_PERMISSIONS: Final = frozenset(
    {
        ALL,
        ADMIN_ACCESS,
        PLUGINS_MANAGE,
        CUSTOMERS_WRITE,
        PLANS_WRITE,
        DEVICES_WRITE,
        SERVICES_WRITE,
        BACKUPS_WRITE,
    }
)

BUILTIN_ROLES: Final[dict[str, list[str]]] = {
    "admin": [ALL],
    "operator": [CUSTOMERS_WRITE, PLANS_WRITE, DEVICES_WRITE, SERVICES_WRITE, BACKUPS_WRITE],
}


def expand_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """Scopes with what they imply (``admin`` implies ``write`` implies ``read``)."""
    granted: set[str] = set()
    for scope in scopes:
        granted |= SCOPE_IMPLIES.get(scope, frozenset())
    return frozenset(granted)


def has_permission(granted: frozenset[str], permission: str) -> bool:
    return ALL in granted or permission in granted
