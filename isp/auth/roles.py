"""Roles and users: the operations behind ``isp role add`` and ``isp user add``."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from isp.auth import permissions as perms
from isp.auth.models import Role, User
from isp.errors import Conflict, NotFound, ValidationFailed


async def ensure_builtin_roles() -> None:
    """Create ``admin`` and ``operator`` when missing; an operator's edits are kept."""
    for name, granted in perms.BUILTIN_ROLES.items():
        await Role.get_or_create(name=name, defaults={"permissions": list(granted)})


async def upsert_role(name: str, permissions: list[str]) -> Role:
    unknown = sorted(set(permissions) - perms.KNOWN_PERMISSIONS)
    if unknown:
        raise ValidationFailed(
            f"unknown permission {unknown[0]!r}; "
            f"known: {', '.join(sorted(perms.KNOWN_PERMISSIONS))}",
            errors=[{"loc": ["permission"], "msg": f"unknown permission {p!r}"} for p in unknown],
        )
    role, created = await Role.get_or_create(name=name, defaults={"permissions": permissions})
    if not created:
        role.permissions = sorted(set(permissions))
        await role.save(update_fields=["permissions"])
    return role


async def add_user(name: str, role_names: list[str]) -> User:
    if await User.exists(name=name):
        raise Conflict(f"a user named {name!r} already exists")
    roles = await Role.filter(name__in=role_names)
    missing = sorted(set(role_names) - {r.name for r in roles})
    if missing:
        raise NotFound(f"no role named {missing[0]!r}: create it with 'isp role add'")
    async with in_transaction() as conn:
        user = await User.create(name=name, using_db=conn)
        if roles:
            await user.roles.add(*roles, using_db=conn)
    return user
