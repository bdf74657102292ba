"""Request and response bodies of the core API (pydantic v2), also the OpenAPI schema."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from isp.core.models import BackupKind, JobStatus, ServiceStatus, Vendor

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# PPPoE logins and plan names end up on router command lines: keep them to a safe alphabet.
Login = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._@+-]{1,64}$")
]
PlanName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")
]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=128)]
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerIn(Strict):
    name: Name
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{3,32}$")] | None = None
    address: Annotated[str, StringConstraints(max_length=500)] | None = None


class CustomerOut(BaseModel):
    id: int
    name: str
    email: str | None
    phone: str | None
    address: str | None
    created_at: datetime


class PlanIn(Strict):
    name: PlanName
    download_mbps: int = Field(gt=0, le=100_000)
    upload_mbps: int = Field(gt=0, le=100_000)


class PlanOut(BaseModel):
    id: int
    name: str
    download_mbps: int
    upload_mbps: int
    created_at: datetime


class DeviceIn(Strict):
    name: Name
    vendor: Vendor
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=22, ge=1, le=65535)
    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    password: Secret

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not HOSTNAME.match(value):
            raise ValueError("must be a hostname or an IP address")
        return value


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


class TrustIn(Strict):
    host_key: str | None = Field(default=None, max_length=16_384)


class ServiceIn(Strict):
    customer_id: int = Field(gt=0)
    plan_id: int = Field(gt=0)
    device_id: int = Field(gt=0)
    username: Login
    password: Secret


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
    device_ids: list[int] | None = None


class JobAccepted(BaseModel):
    job_id: UUID


class JobOut(BaseModel):
    id: UUID
    kind: str
    status: JobStatus
    total: int
    done: int
    failed: list[dict[str, Any]]
    created_at: datetime
    finished_at: datetime | None


class ScheduleOut(BaseModel):
    name: str
    cron: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: UUID | None


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
