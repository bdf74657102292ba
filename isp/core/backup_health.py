"""Backup health per device: when its last complete backup finished, and its last error.

A *complete* backup stored every artifact its plugins produce; a failure (partial ones
included) keeps ``last_backup_at`` and sets ``last_backup_error``, which the next
complete backup clears. A device is *stale* when its last complete backup is older
than N hours, or it never had one.

What a devices list needs is here as functions, so a list route calls them instead of
knowing the columns: :func:`stale` narrows a queryset, :func:`backup_fields` gives a
device's ``last_backup_at`` and ``last_backup_error``, :func:`parse_stale_query` reads
``?backup=stale&hours=N`` with errors naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from isp.core.models import Device
from isp.errors import ValidationFailed

MAX_HOURS = 24 * 366


def stale(
    devices: QuerySet[Device], hours: float, *, now: datetime | None = None
) -> QuerySet[Device]:
    """``devices`` whose last complete backup is older than ``hours``, or missing."""
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=hours)
    return devices.filter(Q(last_backup_at__isnull=True) | Q(last_backup_at__lt=cutoff))


async def count_stale(hours: float) -> int:
    return await stale(Device.all(), hours).count()


def backup_fields(device: Device) -> dict[str, Any]:
    """The health fields a device carries in lists: ``last_backup_at``, ``last_backup_error``."""
    return {"last_backup_at": device.last_backup_at, "last_backup_error": device.last_backup_error}


def parse_stale_query(args: Mapping[str, str], default_hours: float) -> float | None:
    """``?backup=stale&hours=N`` -> N (``default_hours`` without ``hours``); None unfiltered.

    Raises ValidationFailed (422) naming ``backup`` or ``hours`` for anything else.
    """
    wanted = args.get("backup")
    if wanted is None:
        if "hours" in args:
            raise _bad("hours", "only meaningful with backup=stale")
        return None
    if wanted != "stale":
        raise _bad("backup", f"the only filter is 'stale', not {wanted!r}")
    raw = args.get("hours")
    if raw is None:
        return default_hours
    try:
        hours = float(raw)
    except ValueError:
        raise _bad("hours", f"must be a number of hours, not {raw!r}") from None
    if not 0 < hours <= MAX_HOURS:
        raise _bad("hours", f"must be > 0 and <= {MAX_HOURS}")
    return hours


def _bad(parameter: str, msg: str) -> ValidationFailed:
    return ValidationFailed(
        f"query parameter {parameter!r} {msg}", errors=[{"loc": ["query", parameter], "msg": msg}]
    )


async def record_health(
    outcomes: Mapping[int, dict[str, Any] | None], conn: BaseDBAsyncClient | None = None
) -> None:
    """Write each device's outcome: None = a complete backup now, else its failure entry."""
    now = datetime.now(UTC)
    ok = [device_id for device_id, failure in outcomes.items() if failure is None]
    if ok:
        await (
            Device.filter(id__in=ok)
            .using_db(conn)
            .update(last_backup_at=now, last_backup_error=None)
        )
    for device_id, failure in outcomes.items():
        if failure is not None:
            reason = str(failure.get("reason") or "backup failed")
            await Device.filter(id=device_id).using_db(conn).update(last_backup_error=reason)
