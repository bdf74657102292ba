"""Request and response bodies of the core API (pydantic v2), also the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from isp.core.hosts import check_host
from isp.core.models import BackupKind, JobStatus, ServiceStatus, Vendor
from isp.http_input import Id

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# PPPoE logins and plan names end up on router command lines: keep them to a safe alphabet.
Login = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._@+-]{1,64}$")
]
PlanName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")
]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MAX_DEVICE_IDS = 10_000


class Strict(BaseModel):
    """A request body: unknown fields refused; numbers are ``StrictInt`` field by field
    (``true``, ``"5"`` and ``2.0`` are not integers). Not ``strict=True`` on the model:
    that would also refuse enum values given as the strings JSON carries."""

    model_config = ConfigDict(extra="forbid")


Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{3,32}$")]
Address = Annotated[str, StringConstraints(max_length=500)]
Mbps = Annotated[StrictInt, Field(gt=0, le=100_000)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]


class CustomerIn(Strict):
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    address: Address | None = None


class CustomerPatch(Strict):
    """Only the fields sent change; ``null`` clears email, phone or address."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    address: Address | None = None

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("name cannot be null")
        return value


class CustomerOut(BaseModel):
    id: int
    name: str
    email: str | None
    phone: str | None
    address: str | None
    created_at: datetime


class PlanIn(Strict):
    name: PlanName
    download_mbps: Mbps
    upload_mbps: Mbps


class PlanPatch(Strict):
    """A plan's rates (``plan_updated`` makes the network follow); the name stays, since
    routers know the plan by it."""

    download_mbps: Mbps | None = None
    upload_mbps: Mbps | None = None

    @field_validator("download_mbps", "upload_mbps")
    @classmethod
    def _not_null(cls, value: int | None) -> int:
        if value is None:
            raise ValueError("a rate cannot be null")
        return value


class PlanOut(BaseModel):
    id: int
    name: str
    download_mbps: int
    upload_mbps: int
    created_at: datetime


DeviceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class DeviceIn(Strict):
    name: DeviceName
    vendor: Vendor
    host: str = Field(min_length=1, max_length=253)
    port: Port = 22
    username: Username
    password: Secret

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return check_host(value)


class DevicePatch(Strict):
    """Connection details of a device; the vendor and the pinned host key stay."""

    name: DeviceName | None = None
    host: str | None = Field(default=None, min_length=1, max_length=253)
    port: Port | None = None
    username: Username | None = None
    password: Secret | None = None

    @field_validator("name", "host", "port", "username", "password")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return check_host(value)


class DeviceOut(BaseModel):
    """A device as the API shows it: the password never leaves the server."""

    id: int
    name: str
    vendor: Vendor
    host: str
    port: int
    username: str
    host_key_pinned: bool
    host_key_fingerprint: str | None = None
    created_at: datetime
    last_backup_at: datetime | None = None
    last_backup_error: str | None = None


class TrustIn(Strict):
    host_key: str | None = Field(default=None, max_length=16_384)


class ServiceIn(Strict):
    customer_id: Id
    plan_id: Id
    device_id: Id
    username: Login
    password: Secret


class ServicePatch(Strict):
    """A service's plan or PPPoE password (``service_update`` makes the router follow)."""

    plan_id: Id | None = None
    password: Secret | None = None

    @field_validator("plan_id", "password")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


class ServiceOut(BaseModel):
    id: int
    customer_id: int
    plan_id: int
    device_id: int
    username: str
    status: ServiceStatus
    created_at: datetime
    updated_at: datetime


class BackupOut(BaseModel):
    id: int
    device_id: int
    kind: BackupKind
    sha256: str
    size: int
    changed: bool
    created_at: datetime


class BackupList(BaseModel):
    backups: list[BackupOut]


class BackupRunIn(Strict):
    device_ids: list[Id] | None = Field(default=None, max_length=MAX_DEVICE_IDS)


class JobAccepted(BaseModel):
    job_id: UUID


class ForcedTerminationOut(ServiceOut):
    hook_failures: list[dict[str, Any]]


class CustomerList(BaseModel):
    customers: list[CustomerOut]
    next: int | None


class PlanList(BaseModel):
    plans: list[PlanOut]
    next: int | None


class DeviceList(BaseModel):
    devices: list[DeviceOut]
    next: int | None


class ServiceList(BaseModel):
    services: list[ServiceOut]
    next: int | None


class JobOut(BaseModel):
    id: UUID
    kind: str
    status: JobStatus
    total: int
    done: int
    failed: list[dict[str, Any]]
    created_at: datetime
    finished_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobOut]
    next: UUID | None


class ScheduleOut(BaseModel):
    name: str
    cron: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: UUID | None


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
