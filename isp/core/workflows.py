"""Core workflows: one transaction each, the event emitted inside it.

A workflow changes state, emits its event with the domain object and the transaction's
connection (``db``), and commits only if every hook succeeded. When a hook fails,
``emit`` raises only after every hook it started has finished, the transaction rolls
back, the hooks that had already acted are compensated (:func:`workflow_transaction`)
and the error (naming plugin and hook) reaches the API unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import asyncssh
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from isp import audit
from isp.auth.tokens import Principal
from isp.core import events
from isp.core.models import Customer, Device, Plan, Service
from isp.core.schemas import CustomerIn, DeviceIn, PlanIn, ServiceIn
from isp.core.status import check_move
from isp.crypto import SecretBox
from isp.errors import (
    CommitFailed,
    Conflict,
    HookCrashed,
    NotFound,
    ValidationFailed,
    hook_fields,
)
from isp.metrics import count_workflow
from isp.pk_reads import get_by_pk
from isp.plugins import outbox, registry
from isp.plugins.compensation import compensating
from isp.plugins.hooks import HookResult

log = logging.getLogger(__name__)


async def emit_in_transaction(
    event: str, obj: Any, conn: BaseDBAsyncClient, **extra: Any
) -> list[HookResult]:
    """Emit ``event`` inside the workflow's transaction and make sure it can still commit.

    A non-critical hook may fail after a statement of its own failed: on PostgreSQL that
    aborts the whole transaction, and COMMIT would then roll back silently while the API
    reports success. A one-statement probe finds out, and the workflow fails instead,
    naming the hook.

    The event's after-commit hooks get their outbox rows here, in the same transaction:
    run that transaction with :func:`isp.plugins.outbox.transaction` so they are
    delivered right after the commit.
    """
    try:
        results = await registry.emit(event, obj, db=conn, **extra)
    except BaseException:
        count_workflow(event, ok=False)
        raise
    failed = [result for result in results if result.error is not None]
    if failed:
        try:
            await conn.execute_query("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot commit"
            count_workflow(event, ok=False)
            first = failed[0]
            why = first.error.detail if first.error else "failed"
            raise HookCrashed(
                f"hook {first.plugin}.{first.hook} failed ({why}) and left the database "
                "transaction unusable; the workflow was rolled back",
                **hook_fields(first.plugin, first.hook, event),
            ) from exc
    target = registry.current()
    if target.after_commit_hooks(event):
        await outbox.enqueue_after_commit(target, event, obj, conn, **extra)
    count_workflow(event, ok=True)
    return results


@asynccontextmanager
async def workflow_transaction() -> AsyncIterator[BaseDBAsyncClient]:
    """The transaction of a workflow that emits an event.

    If the workflow aborts (a hook failed, or the commit did), the hooks that already
    acted outside the database are compensated after the rollback and before the error
    is answered (:mod:`isp.plugins.compensation`); compensations get the plain
    connection. A failed commit is answered as :class:`CommitFailed` (503).
    """
    async with compensating(get_connection("default")):
        failed: CommitFailed | None = None
        try:
            async with outbox.transaction() as conn:
                yield conn
                transaction = cast(TransactionalDBClient, conn)
                try:
                    await outbox.commit(conn)  # with the outbox rows the workflow owes
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"[:300]
                    failed = CommitFailed(
                        f"the database refused to commit the workflow ({why}); "
                        "nothing was changed"
                    )
                    # SQLite keeps the transaction open after a failed COMMIT: end it, or
                    # the connection's next statements would run inside it.
                    with suppress(Exception):
                        await transaction.rollback()
                    raise failed from exc
        except Exception:
            if failed is None:
                raise
            raise failed from failed.__cause__  # not what ending the transaction raised


def require_driver(event: str, device: Device) -> None:
    """Refuse a move that no enabled plugin would carry out on ``device``'s router.

    Without this, the workflow would commit and answer "done" while no router was
    touched. A plugin counts when it hooks ``event`` and declares the device's vendor in
    its manifest's ``vendors``; plugins that drive no router (texts, records) never do.
    """
    vendor = device.vendor.value
    if not registry.drivers(event, vendor):
        raise Conflict(
            f"no enabled plugin handles {event} for {vendor} devices (device {device.id}): "
            f"enable a plugin that handles {event} for {vendor} devices",
            vendor=vendor,
            event=event,
            device_id=device.id,
        )


async def create_customer(data: CustomerIn) -> Customer:
    async with workflow_transaction() as conn:
        customer = await Customer.create(**data.model_dump(), using_db=conn)
        await emit_in_transaction(events.CUSTOMER_CREATED, customer, conn)
    return customer


async def create_plan(data: PlanIn) -> Plan:
    if await Plan.exists(name=data.name):
        raise Conflict(f"a plan named {data.name!r} already exists", field="name")
    try:
        return await Plan.create(**data.model_dump())
    except IntegrityError as exc:  # a concurrent insert won the race
        raise Conflict(f"a plan named {data.name!r} already exists", field="name") from exc


async def create_device(data: DeviceIn, box: SecretBox) -> Device:
    if await Device.exists(name=data.name):
        raise Conflict(f"a device named {data.name!r} already exists", field="name")
    fields = data.model_dump(exclude={"password"})
    try:
        return await Device.create(**fields, password_enc=box.encrypt(data.password))
    except IntegrityError as exc:
        raise Conflict(f"a device named {data.name!r} already exists", field="name") from exc


async def create_service(data: ServiceIn, box: SecretBox) -> Service:
    missing = [
        {"loc": ["body", field], "msg": f"no {label} with id {value}"}
        for field, label, model, value in (
            ("customer_id", "customer", Customer, data.customer_id),
            ("plan_id", "plan", Plan, data.plan_id),
            ("device_id", "device", Device, data.device_id),
        )
        if not await model.exists(id=value)
    ]
    if missing:
        raise ValidationFailed("the service refers to records that do not exist", errors=missing)
    if await Service.exists(username=data.username):
        raise Conflict(f"a service with username {data.username!r} exists", field="username")
    try:
        return await Service.create(
            customer_id=data.customer_id,
            plan_id=data.plan_id,
            device_id=data.device_id,
            username=data.username,
            password_enc=box.encrypt(data.password),
        )
    except IntegrityError as exc:
        raise Conflict(f"a service with username {data.username!r} exists") from exc


async def move_service(service_id: int, action: str) -> Service:
    """Provision, suspend, resume or terminate a service (see :mod:`isp.core.status`).

    Refused (409) before anything is written when no enabled plugin drives the
    service's device for the move's event (:func:`require_driver`).

    The row is locked for the transaction (PostgreSQL), so two concurrent moves of one
    service are serialized and the second sees the first's result.
    """
    async with workflow_transaction() as conn:
        service = await Service.select_for_update().using_db(conn).get_or_none(id=service_id)
        if service is None:
            raise NotFound(f"no service with id {service_id}")
        move = check_move(action, service.status, service.id)
        await service.fetch_related("customer", "plan", "device", using_db=conn)
        require_driver(move.event, service.device)
        service.status = move.target
        await service.save(using_db=conn, update_fields=["status", "updated_at"])
        await emit_in_transaction(move.event, service, conn)
        log.info(
            "service moved",
            extra={"service_id": service.id, "action": action, "status": move.target.value},
        )
    return service


async def trust_host_key(device_id: int, host_key: str | None, actor: Principal) -> Device:
    """Pin ``host_key`` (an OpenSSH public key line) or forget the pin when None."""
    device: Device = await get_or_404(Device, device_id, "device")
    if host_key is not None:
        try:
            host_key = (
                asyncssh.import_public_key(host_key.strip())
                .export_public_key("openssh")
                .decode()
                .strip()
            )
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ValidationFailed(
                "host_key is not an OpenSSH public key line (e.g. 'ssh-ed25519 AAAA...')",
                errors=[{"loc": ["body", "host_key"], "msg": "not an OpenSSH public key"}],
            ) from exc
    previous = device.host_key
    device.host_key = host_key
    async with in_transaction() as conn:
        await device.save(using_db=conn, update_fields=["host_key"])
        await audit.record(
            conn,
            actor.user_name,
            "device_trust",
            detail={
                "device_id": device.id,
                "had_key": previous is not None,
                "pinned": host_key is not None,
            },
        )
    log.info(
        "device host key re-trusted", extra={"device_id": device.id, "pinned": host_key is not None}
    )
    return device


async def get_or_404(model: type[Any], object_id: Any, label: str) -> Any:
    found = await get_by_pk(model, object_id)
    if found is None:
        raise NotFound(f"no {label} with id {object_id}")
    return found
