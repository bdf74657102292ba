"""The core HTTP API: customers, plans, devices, services, backups and jobs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncssh
from quart import Blueprint, Response, request
from quart_schema import tag, validate_request, validate_response
from tortoise.expressions import Q

from isp.auth import permissions as perms
from isp.auth.guard import current_principal, require
from isp.auth.tokens import authenticate
from isp.context import components
from isp.core import edits, workflows
from isp.core.backup_health import MAX_HOURS, backup_fields, parse_stale_query, stale
from isp.core.backups import back_up_device, diff_exports, read_backup
from isp.core.models import (
    Backup,
    BackupKind,
    Customer,
    Device,
    Job,
    Plan,
    Service,
    ServiceStatus,
    Vendor,
)
from isp.core.schemas import (
    BackupList,
    BackupOut,
    BackupRunIn,
    CustomerIn,
    CustomerList,
    CustomerOut,
    CustomerPatch,
    DeviceIn,
    DeviceList,
    DeviceOut,
    DevicePatch,
    ForcedTerminationOut,
    JobAccepted,
    JobList,
    JobOut,
    PlanIn,
    PlanList,
    PlanOut,
    PlanPatch,
    ServiceIn,
    ServiceList,
    ServiceOut,
    ServicePatch,
    TrustIn,
)
from isp.errors import Forbidden, ISPError, NotFound, ValidationFailed
from isp.http_input import flag, query_id
from isp.openapi import FLAG_SCHEMA, ID_SCHEMA, document, query_param
from isp.pages import PAGE_PARAMS, fetch_page, limit_arg, page_args, search, text_arg

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
        **backup_fields(device),
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
@document(statuses=(502, 504))
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
@document(statuses=(409,))
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
@document(statuses=(409,))
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
@document(statuses=(409,))
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


for _action in ("provision", "suspend", "resume"):
    bp.post(f"/services/<int:service_id>/{_action}")(
        document(statuses=(409, 422, 502, 504))(_service_move(_action))
    )


@bp.post("/services/<int:service_id>/terminate")
@require("write", perms.SERVICES_WRITE)
@tag(["services"])
@document(
    statuses=(409, 422, 502, 504),
    query=(query_param("force", FLAG_SCHEMA, "terminate even when hooks fail (admin)"),),
)
@validate_response(ForcedTerminationOut)
async def terminate_service(service_id: int) -> ForcedTerminationOut:
    """Terminate a service (emits service_terminate).

    ``?force=true`` (an ``admin`` token and ``services:write``) terminates even when the
    router is gone: hooks run, their failures do not abort and are listed in
    ``hook_failures`` and the audit log.
    """
    if not flag("force"):
        service = await workflows.move_service(service_id, "terminate")
        return ForcedTerminationOut(**service_out(service).model_dump(), hook_failures=[])
    principal = current_principal()
    if "admin" not in principal.scopes:
        raise Forbidden("?force=true needs a token with the 'admin' scope", scope="admin")
    fresh = await authenticate(_bearer(), fresh=True)
    if not perms.has_permission(fresh.permissions, perms.ADMIN_ACCESS):
        raise Forbidden(
            f"user {fresh.user_name!r} lacks the permission 'admin'", permission="admin"
        )
    service, failures = await edits.force_terminate(service_id, fresh)
    return ForcedTerminationOut(**service_out(service).model_dump(), hook_failures=failures)


def _bearer() -> str:
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


@bp.post("/devices/<int:device_id>/backup")
@require("write", perms.BACKUPS_WRITE)
@tag(["backups"])
@document(statuses=(409, 422, 502, 503, 504))
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
@document(
    statuses=(503,),
    responses={
        200: {
            "description": "the backup's bytes",
            "content": {"text/plain": {}, "application/octet-stream": {}},
        }
    },
)
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
@document(
    query=(query_param("against", ID_SCHEMA, "the export to compare with"),),
    responses={200: {"description": "unified diff", "content": {"text/plain": {}}}},
)
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
    else:
        against = await workflows.get_or_404(Backup, query_id("against"), "backup")
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
@document(statuses=(404,))
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


# -- lists -------------------------------------------------------------------------------

Q_PARAM = query_param("q", {"type": "string", "maxLength": 200}, "case-insensitive search")


@bp.get("/customers")
@require("read")
@tag(["customers"])
@document(query=(*PAGE_PARAMS, Q_PARAM))
@validate_response(CustomerList)
async def list_customers() -> CustomerList:
    """Customers in id order; ``?q=`` matches name, email or phone (case-insensitive)."""
    page = page_args()
    query = Customer.all()
    q = text_arg("q")
    if q:
        query = query.filter(search(q, "name", "email", "phone"))
    rows, after = await fetch_page(query, page)
    return CustomerList(
        customers=[CustomerOut.model_validate(c, from_attributes=True) for c in rows], next=after
    )


@bp.get("/plans")
@require("read")
@tag(["plans"])
@document(query=PAGE_PARAMS)
@validate_response(PlanList)
async def list_plans() -> PlanList:
    rows, after = await fetch_page(Plan.all(), page_args())
    return PlanList(
        plans=[PlanOut.model_validate(p, from_attributes=True) for p in rows], next=after
    )


@bp.get("/devices")
@require("read")
@tag(["devices"])
@document(
    query=(
        *PAGE_PARAMS,
        query_param("vendor", {"type": "string", "enum": [v.value for v in Vendor]}),
        query_param("q", {"type": "string", "maxLength": 200}, "matches name or host"),
        query_param("backup", {"type": "string", "enum": ["stale"]}, "only stale backups"),
        query_param(
            "hours",
            {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_HOURS},
            "with backup=stale: no complete backup for this many hours "
            "(default ISP_BACKUP_STALE_HOURS)",
        ),
    )
)
@validate_response(DeviceList)
async def list_devices() -> DeviceList:
    """Devices in id order; ``?vendor=``, ``?q=`` (name or host, case-insensitive),
    ``?backup=stale&hours=N`` (no complete backup for N hours, or never)."""
    page = page_args()
    hours = parse_stale_query(request.args, components().settings.backup_stale_hours)
    query = Device.all()
    vendor = text_arg("vendor")
    if vendor is not None:
        query = query.filter(vendor=_enum(Vendor, vendor, "vendor"))
    q = text_arg("q")
    if q:
        query = query.filter(search(q, "name", "host"))
    if hours is not None:
        query = stale(query, hours)
    rows, after = await fetch_page(query, page)
    return DeviceList(devices=[device_out(d) for d in rows], next=after)


@bp.get("/services")
@require("read")
@tag(["services"])
@document(
    query=(
        *PAGE_PARAMS,
        query_param("status", {"type": "string", "enum": [s.value for s in ServiceStatus]}),
        query_param("customer_id", ID_SCHEMA),
        query_param("device_id", ID_SCHEMA),
        query_param("plan_id", ID_SCHEMA),
    )
)
@validate_response(ServiceList)
async def list_services() -> ServiceList:
    """Services in id order, filtered by ``?status=``, ``?customer_id=``, ``?device_id=``,
    ``?plan_id=``."""
    page = page_args()
    query = Service.all()
    status = text_arg("status")
    if status is not None:
        query = query.filter(status=_enum(ServiceStatus, status, "status"))
    for name in ("customer_id", "device_id", "plan_id"):
        value = query_id(name)
        if value is not None:
            query = query.filter(**{name: value})
    rows, after = await fetch_page(query, page)
    return ServiceList(services=[service_out(s) for s in rows], next=after)


@bp.get("/jobs")
@require("read")
@tag(["jobs"])
@document(
    query=(
        query_param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        query_param("after", {"type": "string", "format": "uuid"}, "the previous page's next"),
    )
)
@validate_response(JobList)
async def list_jobs() -> JobList:
    """Jobs newest first; ``?after=<job id>`` continues after that job."""
    limit = limit_arg()
    query = Job.all()
    after_raw = request.args.get("after")
    if after_raw is not None:
        try:
            key = uuid.UUID(after_raw)
        except ValueError:
            raise ValidationFailed(
                "query parameter 'after' must be a job id",
                errors=[{"loc": ["query", "after"], "msg": "must be a UUID"}],
            ) from None
        last = await Job.get_or_none(id=key)
        if last is None:
            raise ValidationFailed(
                f"query parameter 'after': no job with id {key}",
                errors=[{"loc": ["query", "after"], "msg": "no such job"}],
            )
        query = query.filter(
            Q(created_at__lt=last.created_at) | Q(created_at=last.created_at, id__lt=last.id)
        )
    rows = list(await query.order_by("-created_at", "-id").limit(limit + 1))
    following = rows[limit - 1].id if len(rows) > limit else None
    return JobList(
        jobs=[JobOut.model_validate(j, from_attributes=True) for j in rows[:limit]],
        next=following,
    )


def _enum(kind: type[Any], value: str, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(v.value for v in kind)
        raise ValidationFailed(
            f"query parameter {name!r} must be one of: {known}",
            errors=[{"loc": ["query", name], "msg": f"must be one of: {known}"}],
        ) from None


# -- edits -------------------------------------------------------------------------------


@bp.patch("/customers/<int:customer_id>")
@require("write", perms.CUSTOMERS_WRITE)
@tag(["customers"])
@document(statuses=(422, 502, 504))
@validate_request(CustomerPatch)
@validate_response(CustomerOut)
async def patch_customer(customer_id: int, data: CustomerPatch) -> CustomerOut:
    """Change a customer's fields (emits customer_updated)."""
    customer = await edits.update_customer(customer_id, data)
    return CustomerOut.model_validate(customer, from_attributes=True)


@bp.patch("/plans/<int:plan_id>")
@require("write", perms.PLANS_WRITE)
@tag(["plans"])
@document(statuses=(422, 502, 504))
@validate_request(PlanPatch)
@validate_response(PlanOut)
async def patch_plan(plan_id: int, data: PlanPatch) -> PlanOut:
    """Change a plan's rates (emits plan_updated; a failed hook leaves it unchanged)."""
    plan = await edits.update_plan(plan_id, data)
    return PlanOut.model_validate(plan, from_attributes=True)


@bp.patch("/devices/<int:device_id>")
@require("write", perms.DEVICES_WRITE)
@tag(["devices"])
@document(statuses=(409,))
@validate_request(DevicePatch)
@validate_response(DeviceOut)
async def patch_device(device_id: int, data: DevicePatch) -> DeviceOut:
    """Change a device's name or connection details; the pinned host key is kept."""
    return device_out(await edits.update_device(device_id, data, _box()))


@bp.patch("/services/<int:service_id>")
@require("write", perms.SERVICES_WRITE)
@tag(["services"])
@document(statuses=(409, 422, 502, 504))
@validate_request(ServicePatch)
@validate_response(ServiceOut)
async def patch_service(service_id: int, data: ServicePatch) -> ServiceOut:
    """Change a service's plan or password (emits service_update)."""
    return service_out(await edits.update_service(service_id, data, _box()))


NO_CONTENT = {204: {"description": "deleted"}}


@bp.delete("/customers/<int:customer_id>")
@require("write", perms.CUSTOMERS_WRITE)
@tag(["customers"])
@document(statuses=(409,), responses=NO_CONTENT)
async def delete_customer(customer_id: int) -> tuple[str, int]:
    """Delete a customer without services that are not terminated (409 names them)."""
    await edits.delete_customer(customer_id)
    return "", 204


@bp.delete("/plans/<int:plan_id>")
@require("write", perms.PLANS_WRITE)
@tag(["plans"])
@document(statuses=(409,), responses=NO_CONTENT)
async def delete_plan(plan_id: int) -> tuple[str, int]:
    """Delete a plan no service is on (409 names the services)."""
    await edits.delete_plan(plan_id)
    return "", 204


@bp.delete("/devices/<int:device_id>")
@require("write", perms.DEVICES_WRITE)
@tag(["devices"])
@document(
    statuses=(409,),
    responses=NO_CONTENT,
    query=(query_param("purge", FLAG_SCHEMA, "remove the device's backups too"),),
)
async def delete_device(device_id: int) -> tuple[str, int]:
    """Delete a device without live services; one with backups needs ``?purge=true``."""
    parts = components()
    await edits.delete_device(
        device_id, purge=flag("purge"), store=parts.store, bucket=parts.settings.s3_backups_bucket
    )
    return "", 204


@bp.delete("/services/<int:service_id>")
@require("write", perms.SERVICES_WRITE)
@tag(["services"])
@document(statuses=(409,), responses=NO_CONTENT)
async def delete_service(service_id: int) -> tuple[str, int]:
    """Delete a pending or terminated service."""
    await edits.delete_service(service_id)
    return "", 204
