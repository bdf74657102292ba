"""Tortoise models of the ISP domain.

Secrets (router and PPPoE passwords) are stored encrypted by :mod:`isp.crypto`; the
models only ever hold ciphertext. The service status machine lives in
:mod:`isp.core.status`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model

from isp.crypto import process_box
from isp.vendors import Vendor as Vendor  # shared with plugin manifests


class ServiceStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class BackupKind(StrEnum):
    EXPORT = "export"
    BINARY = "binary"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Customer(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    email = fields.CharField(max_length=254, null=True)
    phone = fields.CharField(max_length=32, null=True)
    address = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer"


class Plan(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    download_mbps = fields.IntField()
    upload_mbps = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "plan"


class Device(Model):
    """A router the ISP manages (password_enc is ciphertext, host_key is pinned)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100, unique=True)
    vendor = fields.CharEnumField(Vendor, max_length=32)
    host = fields.CharField(max_length=253)
    port = fields.IntField(default=22)
    username = fields.CharField(max_length=64)
    password_enc = fields.TextField()
    host_key: str | None = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    # backup health: when the last complete backup finished, and why the last one failed
    # (cleared by the next complete backup); see isp.core.backup_health
    last_backup_at = fields.DatetimeField(null=True)
    last_backup_error: str | None = fields.TextField(null=True)

    class Meta:
        table = "device"

    def reveal_password(self) -> str:
        """The router password in clear, for the plugin that logs in; never log it."""
        return process_box().decrypt(self.password_enc)


class Service(Model):
    """A subscriber's service: a PPPoE login on a device, billed on a plan."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "core.Customer", related_name="services", on_delete=fields.RESTRICT
    )
    plan: fields.ForeignKeyRelation[Plan] = fields.ForeignKeyField(
        "core.Plan", related_name="services", on_delete=fields.RESTRICT
    )
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "core.Device", related_name="services", on_delete=fields.RESTRICT
    )
    username = fields.CharField(max_length=64, unique=True)
    password_enc = fields.TextField()
    status = fields.CharEnumField(ServiceStatus, max_length=16, default=ServiceStatus.PENDING)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    customer_id: int
    plan_id: int
    device_id: int

    class Meta:
        table = "service"
        # the filters of GET /services, each paged by id
        indexes = (("customer_id", "id"), ("device_id", "id"), ("plan_id", "id"), ("status", "id"))

    def reveal_password(self) -> str:
        """The subscriber's PPPoE password in clear, for the plugin that provisions it."""
        return process_box().decrypt(self.password_enc)


class Backup(Model):
    """One stored backup of a device, whose bytes live in the object store under object_key."""

    id = fields.IntField(primary_key=True)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "core.Device", related_name="backups", on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(BackupKind, max_length=16)
    sha256 = fields.CharField(max_length=64)
    size = fields.BigIntField()
    changed = fields.BooleanField(default=True)
    object_key = fields.CharField(max_length=500)
    created_at = fields.DatetimeField(auto_now_add=True)

    device_id: int

    class Meta:
        table = "backup"
        # "the previous backup of this kind" and "newest first" per device stay index
        # lookups however many backups a fleet accumulates
        indexes = (("device_id", "kind", "id"),)


class Job(Model):
    """A long-running fleet job (backups of many devices), polled over /jobs/{id}."""

    id = fields.UUIDField(primary_key=True)
    kind = fields.CharField(max_length=32)
    status = fields.CharEnumField(JobStatus, max_length=16, default=JobStatus.QUEUED)
    total = fields.IntField(default=0)
    done = fields.IntField(default=0)
    failed: list[dict[str, Any]] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "job"


class JobDevice(Model):
    """One device's outcome in one fleet job: written once, so a retried task records nothing twice.

    The unique (job, device) pair is what makes recording idempotent: a task picked up
    again after its instance died skips the devices already here.
    """

    id = fields.BigIntField(primary_key=True)
    job: fields.ForeignKeyRelation[Job] = fields.ForeignKeyField(
        "core.Job", related_name="devices", on_delete=fields.CASCADE
    )
    device_id = fields.IntField()
    failure: dict[str, Any] | None = fields.JSONField(null=True)
    recorded_at = fields.DatetimeField(auto_now_add=True)

    job_id: Any

    class Meta:
        table = "job_device"
        unique_together = (("job", "device_id"),)


class ScheduleRun(Model):
    """One period of a schedule that started a job, unique per (name, period) across instances."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64)
    run_at = fields.DatetimeField()
    job: fields.ForeignKeyNullableRelation[Job] = fields.ForeignKeyField(
        "core.Job", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    job_id: Any

    class Meta:
        table = "schedule_run"
        unique_together = (("name", "run_at"),)
