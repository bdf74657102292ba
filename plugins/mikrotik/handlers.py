"""The hooks: from the core's objects to router work, one SSH connection per call.

Each hook acts only on devices whose vendor is ``mikrotik`` and returns None for the
others. Provisioning hooks run inside the workflow's transaction: when a router refuses,
the ``PluginError`` raised here rolls the service status back. A host key learned on
first use is saved through the ``db`` connection the hook received (so for provisioning
it commits, or rolls back, with the workflow; for backups it is saved at once).

Each call runs under one :class:`~.budget.Budget` as long as the hook's timeout from the
manifest, started when the hook is entered: every login, command and file wait is cut
to what is left, so the hook finishes (and cleans up) before the dispatcher cancels it.

Every subscriber hook (provision, suspend, resume, terminate, update) first reads the
secret as it is and declares a compensation that puts it back if the workflow aborts
after the hook acted (:mod:`.undo`); a compensation gets the plain connection as ``db``.

The core's models are reached through the small protocols below, never imported: the
plugin depends on ``isp.plugins`` alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from isp.plugins import PluginError, registry

from . import backup, plugin, provision, undo
from .budget import Budget
from .provision import Subscriber
from .settings import MikrotikSettings
from .ssh import RouterSession, Target, open_session

VENDOR = "mikrotik"

log = logging.getLogger(__name__)


class DeviceLike(Protocol):
    id: int
    vendor: Any
    host: str
    port: int
    username: str
    host_key: str | None

    def reveal_password(self) -> str: ...

    async def save(self, *, using_db: Any = ..., update_fields: Any = ...) -> None: ...


class _Named(Protocol):
    name: str


class PlanLike(Protocol):
    name: str
    download_mbps: int
    upload_mbps: int


class ServiceLike(Protocol):
    id: int
    username: str
    status: Any
    customer: Any
    plan: Any
    device: Any

    def reveal_password(self) -> str: ...


def handles(device: DeviceLike | None) -> bool:
    vendor = getattr(device, "vendor", None)
    return str(getattr(vendor, "value", vendor)) == VENDOR


def target(device: DeviceLike) -> Target:
    return Target(
        device_id=device.id,
        host=device.host,
        port=device.port,
        username=device.username,
        password=device.reveal_password(),
        host_key=device.host_key,
    )


def subscriber(service: ServiceLike) -> Subscriber:
    plan: PlanLike = service.plan
    customer: _Named | None = service.customer
    return Subscriber(
        service_id=service.id,
        username=service.username,
        password=service.reveal_password(),
        plan=plan.name,
        download_mbps=plan.download_mbps,
        upload_mbps=plan.upload_mbps,
        customer=getattr(customer, "name", "") or "",
    )


def hook_timeout(event: str) -> float:
    """The timeout the dispatcher gives this plugin's ``event`` hook: the manifest's, else
    the service's default (``ISP_HOOK_TIMEOUT``). The one source of every time budget."""
    for hook in plugin.manifest.hooks if plugin.manifest is not None else ():
        if hook.name == event and hook.timeout:
            return float(hook.timeout)
    return float(registry.default_timeout)


@asynccontextmanager
async def session(
    device: DeviceLike, db: Any, event: str, settings: MikrotikSettings | None = None
) -> AsyncIterator[RouterSession]:
    """A logged-in session under ``event``'s time budget; pins the host key on first use
    (saved through ``db``)."""
    budget = Budget(hook_timeout(event))
    async with open_session(target(device), settings or plugin.settings, budget) as router:
        if router.learned_host_key is not None:
            device.host_key = router.learned_host_key
            await device.save(using_db=db, update_fields=["host_key"])
        yield router


def mark(service: ServiceLike, event: str) -> None:
    """Before a hook touches the router: its compensation knows the hook ran here."""
    undo.journal.keep(service, event, None)


async def remember(router: RouterSession, service: ServiceLike, event: str) -> None:
    """Keep the subscriber's secret as it is, for the compensation of ``event``."""
    before = await undo.capture(router, service.username)
    captured = undo.Captured(router.target.device_id, service.username, before)
    undo.journal.keep(service, event, captured)


async def put_back(service: ServiceLike, db: Any, event: str) -> None:
    """The compensation of every subscriber hook: the secret as the hook found it."""
    if not handles(service.device):
        return  # the hook left other vendors' routers alone
    marked, captured = undo.journal.take(service, event)
    if marked and captured is None:
        return  # the hook never got to read the router: it changed nothing there
    if captured is None:
        raise PluginError(
            f"cannot undo {event} of subscriber {service.username!r} (service {service.id}): "
            "the secret's previous values were kept by the instance that ran the hook, "
            "and this one does not have them; check the secret on the router by hand"
        )
    try:
        async with session(service.device, db, event) as router:
            await undo.restore(router, captured.username, captured.before)
            log.info(
                "subscriber change undone",
                extra={**router.target.where, "service_id": service.id, "event": event},
            )
    except BaseException:
        undo.journal.keep_for_retry(service.id, event, captured)
        raise
    undo.journal.done(service.id, event)


@registry.hook("service_provision")
async def service_provision(service: ServiceLike, db: Any = None) -> None:
    if handles(service.device):
        mark(service, "service_provision")
        sub = subscriber(service)  # refuse bad values before connecting
        async with session(service.device, db, "service_provision") as router:
            await remember(router, service, "service_provision")
            await provision.provision(router, sub)


@service_provision.compensate
async def undo_service_provision(service: ServiceLike, db: Any = None) -> None:
    """A secret the provision added is removed; one it updated gets its values back."""
    await put_back(service, db, "service_provision")


@registry.hook("service_suspend")
async def service_suspend(service: ServiceLike, db: Any = None) -> None:
    if handles(service.device):
        mark(service, "service_suspend")
        async with session(service.device, db, "service_suspend") as router:
            await remember(router, service, "service_suspend")
            await provision.suspend(router, service.username)


@service_suspend.compensate
async def undo_service_suspend(service: ServiceLike, db: Any = None) -> None:
    """The secret is enabled again (the session suspend ended stays ended)."""
    await put_back(service, db, "service_suspend")


@registry.hook("service_resume")
async def service_resume(service: ServiceLike, db: Any = None) -> None:
    if handles(service.device):
        mark(service, "service_resume")
        sub = subscriber(service)
        async with session(service.device, db, "service_resume") as router:
            await remember(router, service, "service_resume")
            await provision.resume(router, sub)


@service_resume.compensate
async def undo_service_resume(service: ServiceLike, db: Any = None) -> None:
    """The secret is disabled again (or removed, if resume had to add it) and the
    subscriber's session, if one started meanwhile, ends."""
    await put_back(service, db, "service_resume")


@registry.hook("service_terminate")
async def service_terminate(service: ServiceLike, db: Any = None) -> None:
    if handles(service.device):
        mark(service, "service_terminate")
        async with session(service.device, db, "service_terminate") as router:
            await remember(router, service, "service_terminate")
            await provision.terminate(router, service.username)


@service_terminate.compensate
async def undo_service_terminate(service: ServiceLike, db: Any = None) -> None:
    """The removed secret is added back as it was (the ended session is not)."""
    await put_back(service, db, "service_terminate")


ON_ROUTER = frozenset({"active", "suspended"})  # statuses whose secret is on the router


@registry.hook("plan_updated")
async def plan_updated(
    plan: PlanLike,
    db: Any = None,
    changes: Mapping[str, Any] | None = None,
    devices: Iterable[DeviceLike] = (),
) -> None:
    """A plan's new rates on its profile, on every MikroTik router with live services on
    it (all at once); the first router that refuses fails the hook."""
    if not {"download_mbps", "upload_mbps"} & set(changes or {}):
        return
    rate = f"{plan.upload_mbps}M/{plan.download_mbps}M"

    async def one(device: DeviceLike) -> None:
        async with session(device, db, "plan_updated") as router:
            await provision.set_profile_rate(router, plan.name, rate)

    outcomes = await asyncio.gather(
        *(one(d) for d in devices if handles(d)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


@registry.hook("service_update")
async def service_update(
    service: ServiceLike, db: Any = None, changes: Mapping[str, Any] | None = None
) -> None:
    """A new password or plan on the subscriber's secret; a new plan also ends the live
    session. A service not on the router (pending, terminated) needs nothing."""
    status = str(getattr(service.status, "value", service.status))
    if not handles(service.device) or status not in ON_ROUTER:
        return
    sub = subscriber(service)
    mark(service, "service_update")
    async with session(service.device, db, "service_update") as router:
        await remember(router, service, "service_update")
        await provision.update_secret(router, sub, plan_changed="plan_id" in (changes or {}))


@service_update.compensate
async def undo_service_update(service: ServiceLike, db: Any = None) -> None:
    """The secret's previous password and profile."""
    await put_back(service, db, "service_update")


@registry.hook("device_backup")
async def device_backup(device: DeviceLike, db: Any = None) -> list[dict[str, Any]] | None:
    if not handles(device):
        return None
    settings = plugin.settings
    async with session(device, db, "device_backup", settings) as router:
        return await backup.back_up(router, settings)
