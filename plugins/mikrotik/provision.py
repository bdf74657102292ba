"""PPPoE subscribers on RouterOS: a profile per plan, a secret per service.

Every operation is idempotent, because a workflow may be retried after a partial
failure: a profile or secret that already exists is updated with ``set``, never
reported as an error, and ``disable``/``enable``/``remove`` of ``[find name=...]`` are
no-ops when nothing matches. Disabling a secret does not end a live session, so
suspend and terminate also remove the subscriber from ``/ppp active``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidValue, RouterCommandError
from .routeros import Command, Find, has_control, is_already_exists
from .ssh import RouterSession

log = logging.getLogger(__name__)

BUILTIN_PROFILES: Final = frozenset({"default", "default-encryption"})
COMMENT_MAX: Final = 200
_SPACES: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Subscriber:
    """What the router needs to know about one service (built from the core's Service)."""

    service_id: int
    username: str
    password: str = field(repr=False)
    plan: str
    download_mbps: int
    upload_mbps: int
    customer: str = ""

    def __post_init__(self) -> None:
        for what, value in (("service username", self.username), ("plan name", self.plan)):
            if not value or has_control(value) or value != value.strip():
                raise InvalidValue(
                    f"{what} {value!r} cannot be a RouterOS name: it must be non-empty, "
                    "without control characters or surrounding spaces",
                    service_id=self.service_id,
                )
        if self.plan in BUILTIN_PROFILES:
            raise InvalidValue(
                f"plan name {self.plan!r} is a built-in RouterOS PPP profile; rename the plan "
                "so provisioning does not change every subscriber using that profile",
                service_id=self.service_id,
            )
        if self.download_mbps <= 0 or self.upload_mbps <= 0:
            raise InvalidValue(
                f"plan {self.plan!r} needs positive rates, got {self.download_mbps} down / "
                f"{self.upload_mbps} up Mbit/s",
                service_id=self.service_id,
            )

    @property
    def rate_limit(self) -> str:
        """``<rx>/<tx>`` from the router's view: rx is the subscriber's upload."""
        return f"{self.upload_mbps}M/{self.download_mbps}M"

    @property
    def comment(self) -> str:
        """Who this secret belongs to; whitespace and control characters collapsed."""
        customer = _SPACES.sub(" ", "".join(" " if has_control(c) else c for c in self.customer))
        return f"isp:service={self.service_id} customer={customer.strip()}"[:COMMENT_MAX]


def _by_name(name: str) -> Find:
    return Find({"name": name})


async def ensure_profile(router: RouterSession, sub: Subscriber) -> None:
    """The plan's PPP profile exists with the plan's rate (added, or ``set`` when present)."""
    add = Command("/ppp profile", "add", {"name": sub.plan, "rate-limit": sub.rate_limit})
    if await _add(router, add):
        return
    update = Command(
        "/ppp profile", "set", {"rate-limit": sub.rate_limit}, target=_by_name(sub.plan)
    )
    await router.run(update)


async def ensure_secret(router: RouterSession, sub: Subscriber) -> None:
    """The subscriber's PPPoE secret exists, enabled, with the current password and plan."""
    values = {
        "password": sub.password,
        "service": "pppoe",
        "profile": sub.plan,
        "comment": sub.comment,
    }
    if await _add(router, Command("/ppp secret", "add", {"name": sub.username, **values})):
        return
    update = Command(
        "/ppp secret", "set", {**values, "disabled": "no"}, target=_by_name(sub.username)
    )
    await router.run(update)


async def provision(router: RouterSession, sub: Subscriber) -> None:
    await ensure_profile(router, sub)
    await ensure_secret(router, sub)
    log.info("subscriber provisioned", extra={**router.target.where, "service_id": sub.service_id})


async def suspend(router: RouterSession, username: str) -> None:
    """Disable the secret, then end the live session (disabling alone does not)."""
    await router.run(Command("/ppp secret", "disable", target=_by_name(username)))
    await kick(router, username)


async def resume(router: RouterSession, sub: Subscriber) -> None:
    """Enable the secret; if it vanished from the router meanwhile, provision it again."""
    await router.run(Command("/ppp secret", "enable", target=_by_name(sub.username)))
    if not await secret_exists(router, sub.username):
        log.warning(
            "secret missing on resume, provisioning it again",
            extra={**router.target.where, "service_id": sub.service_id},
        )
        await provision(router, sub)


async def terminate(router: RouterSession, username: str) -> None:
    """Remove the secret (no new logins), then the live session."""
    await router.run(Command("/ppp secret", "remove", target=_by_name(username)))
    await kick(router, username)


async def kick(router: RouterSession, username: str) -> None:
    await router.run(Command("/ppp active", "remove", target=_by_name(username)))


async def secret_exists(router: RouterSession, username: str) -> bool:
    count = Command("/ppp secret", "print", flags=("count-only",), where={"name": username})
    text = (await router.run(count, quiet=False)).strip()
    if not text.isdigit():
        raise router.command_error(count, f"unexpected output: {text[:200]!r}")
    return int(text) > 0


async def _add(router: RouterSession, command: Command) -> bool:
    """Run an ``add``; False (not an error) when the item already exists."""
    try:
        await router.run(command)
    except RouterCommandError as exc:
        if is_already_exists(str(exc.extra.get("router_message", ""))):
            return False
        raise
    return True
