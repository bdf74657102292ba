"""Changing and removing records: one transaction each, refusals before anything changes.

An edit the network must follow emits its event inside the transaction, like every
workflow (``plan_updated``, ``service_update``; ``customer_updated`` for the records
plugins keep about customers): a failed hook rolls the edit back. ``changes`` maps each
changed field to its previous value (``password`` to None: secrets never travel).

A removal is refused with 409 naming what is in the way while something depends on the
record (services that are not terminated, a plan in use, a device's backups).
"""

from __future__ import annotations

import logging
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from isp import audit
from isp.auth.tokens import Principal
from isp.core import events
from isp.core.models import Backup, Customer, Device, Plan, Service, ServiceStatus
from isp.core.schemas import CustomerPatch, DevicePatch, PlanPatch, ServicePatch
from isp.core.status import check_move
from isp.core.workflows import emit_in_transaction, require_driver, workflow_transaction
from isp.crypto import SecretBox
from isp.errors import Conflict, NotFound, PluginError, ValidationFailed, hook_fields
from isp.plugins import outbox, registry
from isp.storage import ObjectStore

log = logging.getLogger(__name__)

LIVE = (ServiceStatus.PENDING, ServiceStatus.ACTIVE, ServiceStatus.SUSPENDED)
ON_ROUTER = (ServiceStatus.ACTIVE, ServiceStatus.SUSPENDED)  # what a router holds a secret for
SHOWN_IDS = 10


def _changes(record: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Apply ``values`` to ``record``; the fields that changed, with their previous values."""
    changed: dict[str, Any] = {}
    for name, value in values.items():
        previous = getattr(record, name)
        if previous != value:
            changed[name] = previous
            setattr(record, name, value)
    return changed


async def _locked(model: type[Any], conn: Any, record_id: int, label: str) -> Any:
    found = await model.select_for_update().using_db(conn).get_or_none(id=record_id)
    if found is None:
        raise NotFound(f"no {label} with id {record_id}")
    return found


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


async def update_customer(customer_id: int, data: CustomerPatch) -> Customer:
    async with workflow_transaction() as conn:
        customer: Customer = await _locked(Customer, conn, customer_id, "customer")
        changes = _changes(customer, data.model_dump(exclude_unset=True))
        if changes:
            await customer.save(using_db=conn, update_fields=list(changes))
            await emit_in_transaction(events.CUSTOMER_UPDATED, customer, conn, changes=changes)
    return customer


async def update_plan(plan_id: int, data: PlanPatch) -> Plan:
    """New rates; ``plan_updated`` gets the routers with live services on the plan."""
    async with workflow_transaction() as conn:
        plan: Plan = await _locked(Plan, conn, plan_id, "plan")
        changes = _changes(plan, data.model_dump(exclude_unset=True))
        if changes:
            await plan.save(using_db=conn, update_fields=list(changes))
            devices = (
                await Device.filter(services__plan_id=plan.id, services__status__in=LIVE)
                .using_db(conn)
                .distinct()
                .order_by("id")
            )
            await emit_in_transaction(
                events.PLAN_UPDATED, plan, conn, changes=changes, devices=list(devices)
            )
    return plan


async def update_device(device_id: int, data: DevicePatch, box: SecretBox) -> Device:
    """Connection details; the pinned host key is kept (``PUT /devices/{id}/trust``)."""
    values = data.model_dump(exclude_unset=True)
    password = values.pop("password", None)
    if "name" in values and await Device.exists(name=values["name"], id__not=device_id):
        raise Conflict(f"a device named {values['name']!r} already exists", field="name")
    async with in_transaction() as conn:
        device: Device = await _locked(Device, conn, device_id, "device")
        changes = _changes(device, values)
        if password is not None and box.decrypt(device.password_enc) != password:
            device.password_enc = box.encrypt(password)
            changes["password_enc"] = None
        if changes:
            try:
                await device.save(using_db=conn, update_fields=list(changes))
            except IntegrityError as exc:
                raise Conflict(f"a device named {device.name!r} already exists") from exc
    return device


async def update_service(service_id: int, data: ServicePatch, box: SecretBox) -> Service:
    """A new plan or password; ``service_update`` lets the router follow (relations loaded,
    the new plan included). For a service on its router (active, suspended) the change
    is refused (409) when no enabled plugin drives that router for ``service_update``."""
    values = data.model_dump(exclude_unset=True)
    if "plan_id" in values and not await Plan.exists(id=values["plan_id"]):
        raise ValidationFailed(
            "the service refers to records that do not exist",
            errors=[{"loc": ["body", "plan_id"], "msg": f"no plan with id {values['plan_id']}"}],
        )
    async with workflow_transaction() as conn:
        service: Service = await _locked(Service, conn, service_id, "service")
        if service.status is ServiceStatus.TERMINATED:
            raise Conflict(f"service {service_id} is terminated: it cannot change")
        changes: dict[str, Any] = {}
        if "plan_id" in values and values["plan_id"] != service.plan_id:
            changes["plan_id"] = service.plan_id
            service.plan_id = values["plan_id"]
        password = values.get("password")
        if password is not None and box.decrypt(service.password_enc) != password:
            service.password_enc = box.encrypt(password)
            changes["password"] = None
        if changes:
            if service.status in ON_ROUTER:
                await service.fetch_related("device", using_db=conn)
                require_driver(events.SERVICE_UPDATE, service.device)
            fields = ["plan_id" if k == "plan_id" else "password_enc" for k in changes]
            await service.save(using_db=conn, update_fields=[*fields, "updated_at"])
            await service.fetch_related("customer", "plan", "device", using_db=conn)
            await emit_in_transaction(events.SERVICE_UPDATE, service, conn, changes=changes)
    return service


async def delete_customer(customer_id: int) -> None:
    """Refused while the customer has services that are not terminated; terminated ones
    go with the customer."""
    async with in_transaction() as conn:
        await _locked(Customer, conn, customer_id, "customer")
        live = await _live_service_ids(conn, customer_id=customer_id)
        if live:
            raise Conflict(
                f"customer {customer_id} has services that are not terminated: "
                f"{_ids(live)}; terminate them first",
                service_ids=live,
            )
        await Service.filter(customer_id=customer_id).using_db(conn).delete()
        await Customer.filter(id=customer_id).using_db(conn).delete()


async def delete_plan(plan_id: int) -> None:
    """Refused while any service (terminated ones included) is on the plan."""
    async with in_transaction() as conn:
        await _locked(Plan, conn, plan_id, "plan")
        using: list[Any] = list(
            await Service.filter(plan_id=plan_id)
            .using_db(conn)
            .order_by("id")
            .values_list("id", flat=True)
        )
        if using:
            ids = [int(i) for i in using]
            raise Conflict(
                f"plan {plan_id} is in use by services {_ids(ids)}; move or delete them first",
                service_ids=ids,
            )
        await Plan.filter(id=plan_id).using_db(conn).delete()


async def delete_device(device_id: int, *, purge: bool, store: ObjectStore, bucket: str) -> None:
    """Refused while services that are not terminated use the device, or while it has
    backups and ``purge`` is not set; terminated services go with it."""
    async with in_transaction() as conn:
        await _locked(Device, conn, device_id, "device")
        live = await _live_service_ids(conn, device_id=device_id)
        if live:
            raise Conflict(
                f"device {device_id} has services that are not terminated: {_ids(live)}; "
                "terminate them first",
                service_ids=live,
            )
        keys = list(
            await Backup.filter(device_id=device_id)
            .using_db(conn)
            .values_list("object_key", flat=True)
        )
        if keys and not purge:
            raise Conflict(
                f"device {device_id} has {len(keys)} backups, which are kept: delete with "
                "?purge=true to remove the device and its backups",
                backups=len(keys),
            )
        await Backup.filter(device_id=device_id).using_db(conn).delete()
        await Service.filter(device_id=device_id).using_db(conn).delete()
        await Device.filter(id=device_id).using_db(conn).delete()
    for key in keys:  # after the commit: an object left behind is garbage, not a lost row
        try:
            await store.delete(bucket, str(key))
        except Exception:  # noqa: BLE001 - logged; the records are gone either way
            log.warning("backup object not removed", extra={"key": key, "device_id": device_id})


async def delete_service(service_id: int) -> None:
    async with in_transaction() as conn:
        service: Service = await _locked(Service, conn, service_id, "service")
        if service.status not in (ServiceStatus.PENDING, ServiceStatus.TERMINATED):
            raise Conflict(
                f"service {service_id} is {service.status.value}: terminate it before deleting",
                service_status=service.status.value,
            )
        await Service.filter(id=service_id).using_db(conn).delete()


async def _live_service_ids(conn: Any, **where: Any) -> list[int]:
    ids: list[Any] = list(
        await Service.filter(status__in=LIVE, **where)
        .using_db(conn)
        .order_by("id")
        .values_list("id", flat=True)
    )
    return [int(i) for i in ids]


async def force_terminate(service_id: int, actor: Principal) -> tuple[Service, list[Any]]:
    """Terminate even when hooks fail (a router that is gone): the hooks run, their
    failures do not abort; they are answered and written to the audit log.

    The hooks run in a transaction with the new status; if one fails, that transaction
    (and whatever the hooks wrote) rolls back and a second one records the termination.
    """
    failures: list[dict[str, Any]] = []
    try:
        async with outbox.transaction() as conn:
            service = await _terminated(conn, service_id)
            results = await registry.emit(events.SERVICE_TERMINATE, service, db=conn)
            failures = [
                {
                    **hook_fields(r.plugin, r.hook, events.SERVICE_TERMINATE),
                    "reason": r.error.detail,
                }
                for r in results
                if r.error is not None
            ]
            if failures:
                await conn.execute_query("SELECT 1")  # still able to commit?
            await _audit_force(conn, actor, service, failures)
    except PluginError as exc:
        failures = failures_of(exc)
    except Conflict:
        raise
    except Exception as exc:  # noqa: BLE001 - the transaction broke: record without hooks
        if not failures:
            raise
        log.warning("forced termination: hooks left the transaction unusable: %s", exc)
    else:
        return service, failures
    async with outbox.transaction() as conn:
        service = await _terminated(conn, service_id)
        await _audit_force(conn, actor, service, failures)
    log.warning(
        "service terminated by force; hooks failed",
        extra={"service_id": service_id, "failures": len(failures)},
    )
    return service, failures


async def _terminated(conn: Any, service_id: int) -> Service:
    """The service terminated in ``conn``, its after-commit deliveries written there too
    (whichever of the two transactions commits, they go out once)."""
    service: Service = await _locked(Service, conn, service_id, "service")
    move = check_move("terminate", service.status, service.id)
    await service.fetch_related("customer", "plan", "device", using_db=conn)
    service.status = move.target
    await service.save(using_db=conn, update_fields=["status", "updated_at"])
    target = registry.current()
    if target.after_commit_hooks(events.SERVICE_TERMINATE):
        await outbox.enqueue_after_commit(target, events.SERVICE_TERMINATE, service, conn)
    return service


async def _audit_force(
    conn: Any, actor: Principal, service: Service, failures: list[dict[str, Any]]
) -> None:
    await audit.record(
        conn,
        actor.user_name,
        "service_force_terminate",
        detail={"service_id": service.id, "hook_failures": failures},
    )


def failures_of(exc: PluginError) -> list[dict[str, Any]]:
    listed = exc.extra.get("failures")
    if isinstance(listed, list):
        return [
            {
                **hook_fields(f.get("plugin"), f.get("hook"), events.SERVICE_TERMINATE),
                "reason": f.get("detail"),
            }
            for f in listed
        ]
    return [{**hook_fields(exc.plugin, exc.hook, events.SERVICE_TERMINATE), "reason": exc.detail}]
