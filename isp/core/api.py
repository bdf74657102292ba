"""The core HTTP API: customers, plans, devices, services, backups and jobs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncssh
from quart import Blueprint, Response, request
from quart_schema import tag, validate_request, validate_response

from isp.auth import permissions as perms
from isp.auth.guard import current_principal, require
from isp.context import components
from isp.core import workflows
from isp.core.backups import back_up_device, diff_exports, read_backup
from isp.core.models import Backup, BackupKind, Customer, Device, Job, Plan, Service
from isp.core.schemas import (
    BackupList,
    BackupOut,
    BackupRunIn,
    CustomerIn,
    CustomerOut,
    DeviceIn,
    DeviceOut,
    JobAccepted,
    JobOut,
    PlanIn,
    PlanOut,
    ServiceIn,
    ServiceOut,
    TrustIn,
)
from isp.errors import ISPError, NotFound, ValidationFailed

bp = Blueprint("core", __name__)


def _box() -> Any:
    box = components().box
    if box is None:
        raise ISPError("secrets are not available: the service has not started")
    return box


def device_out(device: Device) -> DeviceOut:
    return DeviceOut(
        id=device.id,
        name=device.name,
        vendor=device.vendor,
        host=device.host,
        port=device.port,
        username=device.username,
        host_key_pinned=device.host_key is not None,
        host_key_fingerprint=fingerprint(device.host_key),
        created_at=device.created_at,
    )


def fingerprint(host_key: str | None) -> str | None:
    """OpenSSH's SHA256 fingerprint of a pinned key, as ``ssh-keygen -l`` shows it."""
    if not host_key:
        return None
    try:
        return str(asyncssh.import_public_key(host_key).get_fingerprint("sha256"))
    except (asyncssh.KeyImportError, ValueError):
        return None


def service_out(service: Service) -> ServiceOut:
    return ServiceOut.model_validate(service, from_attributes=True)


@bp.post("/customers")
@require("write", perms.CUSTOMERS_WRITE)
@tag(["customers"])
@validate_request(CustomerIn)
@validate_response(CustomerOut, 201)
async def create_customer(data: CustomerIn) -> tuple[CustomerOut, int]:
    customer = await workflows.create_customer(data)
    return CustomerOut.model_validate(customer, from_attributes=True), 201


@bp.get("/customers/<int:customer_id>")
@require("read")
@tag(["customers"])
@validate_response(CustomerOut)
async def get_customer(customer_id: int) -> CustomerOut:
    customer = await workflows.get_or_404(Customer, customer_id, "customer")
    return CustomerOut.model_validate(customer, from_attributes=True)


@bp.post("/plans")
@require("write", perms.PLANS_WRITE)
@tag(["plans"])
@validate_request(PlanIn)
@validate_response(PlanOut, 201)
async def create_plan(data: PlanIn) -> tuple[PlanOut, int]:
    plan = await workflows.create_plan(data)
    return PlanOut.model_validate(plan, from_attributes=True), 201


@bp.get("/plans/<int:plan_id>")
@require("read")
@tag(["plans"])
@validate_response(PlanOut)
async def get_plan(plan_id: int) -> PlanOut:
    plan = await workflows.get_or_404(Plan, plan_id, "plan")
    return PlanOut.model_validate(plan, from_attributes=True)


@bp.post("/devices")
@require("write", perms.DEVICES_WRITE)
@tag(["devices"])
@validate_request(DeviceIn)
@validate_response(DeviceOut, 201)
async def create_device(data: DeviceIn) -> tuple[DeviceOut, int]:
    device = await workflows.create_device(data, _box())
    return device_out(device), 201


@bp.get("/devices/<int:device_id>")
@require("read")
@tag(["devices"])
@validate_response(DeviceOut)
async def get_device(device_id: int) -> DeviceOut:
    return device_out(await workflows.get_or_404(Device, device_id, "device"))


@bp.post("/services")
@require("write", perms.SERVICES_WRITE)
@tag(["services"])
@validate_request(ServiceIn)
@validate_response(ServiceOut, 201)
async def create_service(data: ServiceIn) -> tuple[ServiceOut, int]:
    service = await workflows.create_service(data, _box())
    return service_out(service), 201


@bp.get("/services/<int:service_id>")
@require("read")
@tag(["services"])
@validate_response(ServiceOut)
async def get_service(service_id: int) -> ServiceOut:
    return service_out(await workflows.get_or_404(Service, service_id, "service"))


def _service_move(action: str) -> Any:
    @require("write", perms.SERVICES_WRITE)
    @validate_response(ServiceOut)
    async def move(service_id: int) -> ServiceOut:
        return service_out(await workflows.move_service(service_id, action))

    move.__name__ = f"{action}_service"
    move.__doc__ = f"{action.capitalize()} a service (emits service_{action})."
    return tag(["services"])(move)


for _action in ("provision", "suspend", "resume", "terminate"):
    bp.post(f"/services/<int:service_id>/{_action}")(_service_move(_action))


@bp.post("/devices/<int:device_id>/backup")
@require("write", perms.BACKUPS_WRITE)
@tag(["backups"])
@validate_response(BackupOut, 201)
async def backup_device(device_id: int) -> tuple[BackupOut, int]:
    """Back up one device now; answers the text export when there is one."""
    device = await workflows.get_or_404(Device, device_id, "device")
    parts = components()
    backups = await back_up_device(device, parts.store, parts.settings.s3_backups_bucket)
    first = next((b for b in backups if b.kind is BackupKind.EXPORT), backups[0])
    return BackupOut.model_validate(first, from_attributes=True), 201


@bp.get("/devices/<int:device_id>/backups")
@require("read")
@tag(["backups"])
@validate_response(BackupList)
async def list_backups(device_id: int) -> BackupList:
    await workflows.get_or_404(Device, device_id, "device")
    backups = await Backup.filter(device_id=device_id).order_by("-created_at", "-id")
    return BackupList(backups=[BackupOut.model_validate(b, from_attributes=True) for b in backups])


@bp.get("/backups/<int:backup_id>/content")
@require("read")
@tag(["backups"])
async def backup_content(backup_id: int) -> Response:
    backup = await workflows.get_or_404(Backup, backup_id, "backup")
    parts = components()
    data = await read_backup(backup, parts.store, parts.settings.s3_backups_bucket)
    if backup.kind is BackupKind.EXPORT:
        return Response(data, mimetype="text/plain")
    return Response(data, mimetype="application/octet-stream")


@bp.get("/backups/<int:backup_id>/diff")
@require("read")
@tag(["backups"])
async def backup_diff(backup_id: int) -> Response:
    """Unified diff of two exports: ``?against=<id>``, by default the previous export."""
    backup = await workflows.get_or_404(Backup, backup_id, "backup")
    against_raw = request.args.get("against")
    if against_raw is None:
        against = (
            await Backup.filter(device_id=backup.device_id, kind=backup.kind, id__lt=backup.id)
            .order_by("-id")
            .first()
        )
        if against is None:
            raise NotFound(f"backup {backup_id} is the first of its device: nothing to compare")
    elif not against_raw.isdigit():
        raise ValidationFailed(
            "query parameter 'against' must be a backup id",
            errors=[{"loc": ["query", "against"], "msg": "must be an integer"}],
        )
    else:
        against = await workflows.get_or_404(Backup, int(against_raw), "backup")
    parts = components()
    diff = await diff_exports(backup, against, parts.store, parts.settings.s3_backups_bucket)
    return Response(diff, mimetype="text/plain")


@bp.put("/devices/<int:device_id>/trust")
@require("write", perms.DEVICES_WRITE)
@tag(["devices"])
@validate_request(TrustIn)
@validate_response(DeviceOut)
async def trust_device(device_id: int, data: TrustIn) -> DeviceOut:
    """Re-trust a router's host key after a legitimate change (new router, new key).

    ``{}`` or ``{"host_key": null}`` forgets the pinned key: the next connection pins
    what the router presents. ``{"host_key": "ssh-ed25519 AAAA..."}`` pins that key.
    """
    device = await workflows.trust_host_key(device_id, data.host_key, current_principal())
    return device_out(device)


@bp.post("/backups/run")
@require("write", perms.BACKUPS_WRITE)
@tag(["backups"])
@validate_request(BackupRunIn)
@validate_response(JobAccepted, 202)
async def run_backups(data: BackupRunIn) -> tuple[JobAccepted, int]:
    job = await components().jobs.start(data.device_ids)
    return JobAccepted(job_id=job.id), 202


@bp.get("/jobs/<job_id>")
@require("read")
@tag(["jobs"])
@validate_response(JobOut)
async def get_job(job_id: str) -> JobOut:
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"no job with id {job_id!r}") from None
    job = await Job.get_or_none(id=key)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return JobOut.model_validate(job, from_attributes=True)
