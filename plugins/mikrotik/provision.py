"""PPPoE subscribers on RouterOS: a profile per plan, a secret per service.

Every operation is idempotent, because a workflow may be retried after a partial
failure: a profile or secret is added or, when one of that name exists, updated, in one
conditional statement (:class:`~.routeros.Upsert`), so no "already exists" sentence is
ever matched (its wording differs between menus and releases). Disabling a secret does
not end a live session, so suspend and terminate also remove the subscriber from
``/ppp active``.

``disable``/``remove [find name=...]`` are silent no-ops on RouterOS when nothing
matches, so each one runs on the channel after ``:put [:len [find ...]]``: the count says
whether the subscriber was there. Suspending one who is not (the secret was renamed or
removed by hand) is refused with :class:`~.errors.SubscriberMissing`, since the service
would show ``suspended`` while the subscriber may still be online; terminating one who
is already gone succeeds with a warning (there is nothing left to cut off).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidValue, SubscriberMissing
from .routeros import Command, Count, Find, Script, Upsert, has_control
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
    await router.run(Upsert("/ppp profile", sub.plan, {"rate-limit": sub.rate_limit}))


async def ensure_secret(router: RouterSession, sub: Subscriber) -> None:
    """The subscriber's PPPoE secret exists, enabled, with the current password and plan."""
    values = {
        "password": sub.password,
        "service": "pppoe",
        "profile": sub.plan,
        "comment": sub.comment,
    }
    await router.run(Upsert("/ppp secret", sub.username, values, on_update={"disabled": "no"}))


async def provision(router: RouterSession, sub: Subscriber) -> None:
    await ensure_profile(router, sub)
    await ensure_secret(router, sub)
    log.info("subscriber provisioned", extra={**router.target.where, "service_id": sub.service_id})


async def suspend(router: RouterSession, username: str) -> None:
    """Disable the secret, then end the live session (disabling alone does not).

    A subscriber without a secret on the router is refused (:class:`SubscriberMissing`).
    """
    if not await _counted(router, Command("/ppp secret", "disable", target=_by_name(username))):
        where = router.target
        raise SubscriberMissing(
            f"subscriber {username!r} is not on router {where.host} (device "
            f"{where.device_id}): no PPP secret of that name, so nothing was disabled and "
            "the subscriber may still be online under another name. Provision the service "
            "again, or fix the secret on the router, then suspend",
            subscriber=username,
            **where.where,
        )
    await kick(router, username)


async def resume(router: RouterSession, sub: Subscriber) -> None:
    """Enable the secret; if it vanished from the router meanwhile, provision it again."""
    if not await _counted(router, Command("/ppp secret", "enable", target=_by_name(sub.username))):
        log.warning(
            "secret missing on resume, provisioning it again",
            extra={**router.target.where, "service_id": sub.service_id},
        )
        await provision(router, sub)


async def terminate(router: RouterSession, username: str) -> None:
    """Remove the secret (no new logins), then the live session; gone already is fine."""
    if not await _counted(router, Command("/ppp secret", "remove", target=_by_name(username))):
        log.warning(
            "subscriber %s already gone from the router, nothing to remove",
            username,
            extra={**router.target.where, "subscriber": username},
        )
    await kick(router, username)


async def set_profile_rate(router: RouterSession, plan: str, rate_limit: str) -> bool:
    """A plan's new rate on the profile of that name; False when this router has none."""
    command = Command("/ppp profile", "set", {"rate-limit": rate_limit}, target=_by_name(plan))
    return await _counted(router, command)


async def update_secret(router: RouterSession, sub: Subscriber, *, plan_changed: bool) -> None:
    """The secret takes the service's current password and plan (its disabled state
    stays: a suspended subscriber stays suspended). A new plan's profile is made sure of
    first, and the live session ends so the new rate applies at the next login."""
    if plan_changed:
        await ensure_profile(router, sub)
    values = {"password": sub.password, "profile": sub.plan}
    if not await _counted(
        router, Command("/ppp secret", "set", values, target=_by_name(sub.username))
    ):
        where = router.target
        raise SubscriberMissing(
            f"subscriber {sub.username!r} is not on router {where.host} (device "
            f"{where.device_id}): no PPP secret of that name to change. Provision the "
            "service again, or fix the secret on the router, then change it",
            subscriber=sub.username,
            **where.where,
        )
    if plan_changed:
        await kick(router, sub.username)
    log.info("subscriber updated", extra={**router.target.where, "service_id": sub.service_id})


async def kick(router: RouterSession, username: str) -> None:
    await router.run(Command("/ppp active", "remove", target=_by_name(username)))


async def secret_exists(router: RouterSession, username: str) -> bool:
    count = Count("/ppp secret", _by_name(username))
    return await _count(router, count) > 0


async def _counted(router: RouterSession, command: Command) -> bool:
    """Run ``command`` on the secret ``[find name=...]`` names; False if it named none.

    One channel: ``:put [:len [/ppp secret find name=...]]; <command>``. An empty find
    makes the command a silent no-op, so the count is how we know.
    """
    assert command.target is not None
    count = Count(command.menu, command.target)
    return await _count(router, Script((count, command), command.label)) > 0


async def _count(router: RouterSession, script: Count | Script) -> int:
    """Run a script that prints one count (and nothing else on success)."""
    text = (await router.run(script, quiet=False)).strip()
    if not text.isdigit():
        raise router.command_error(script, f"unexpected output: {text[:200]!r}")
    return int(text)
