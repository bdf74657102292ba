"""The backup schedule: ``ISP_BACKUP_SCHEDULE`` starts a fleet job for every device.

The tick is a procrastinate periodic task: every instance's worker sees it, and the
engine defers it once per period (a unique row per task and timestamp), so exactly one
instance runs it. The task itself is idempotent too: it claims the period in
``ScheduleRun`` (unique per name and time) in the transaction that creates the job, so
a retried tick (its instance died) never starts a second job for the same period, and
no job exists without its period.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint
from quart_schema import tag, validate_response
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from isp.auth.guard import require
from isp.context import components
from isp.core.jobs import FleetJobs
from isp.core.models import Job, ScheduleRun
from isp.core.schemas import ScheduleList, ScheduleOut
from isp.cron import engine_cron, next_run
from isp.queue import TaskQueue

log = logging.getLogger(__name__)

BACKUP = "backup"


class BackupSchedule:
    """Registers the periodic tick (when a schedule is set) and describes its runs."""

    def __init__(self, cron: str | None, jobs: FleetJobs, queue: TaskQueue) -> None:
        self.cron = cron
        self._jobs = jobs
        if cron is not None:
            queue.periodic("scheduled_backup", engine_cron(cron), self.tick)

    async def tick(self, timestamp: int) -> None:
        """One period: claim it, then start the fleet job (nothing if already claimed)."""
        run_at = datetime.fromtimestamp(timestamp, UTC)

        async def claim(job: Job, conn: BaseDBAsyncClient) -> None:
            await ScheduleRun.create(name=BACKUP, run_at=run_at, job_id=job.id, using_db=conn)

        try:
            job = await self._jobs.start(None, claim=claim)
        except IntegrityError:
            log.info("schedule period already started", extra={"run_at": run_at.isoformat()})
            return
        log.info("scheduled backup started",
                 extra={"run_at": run_at.isoformat(), "job_id": str(job.id)})  # fmt: skip

    async def describe(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """The schedule with its next run and its last run's time and job (none when unset)."""
        if self.cron is None:
            return []
        last = await ScheduleRun.filter(name=BACKUP).order_by("-run_at").first()
        return [
            {
                "name": BACKUP,
                "cron": self.cron,
                "next_run_at": next_run(self.cron, now or datetime.now(UTC)),
                "last_run_at": last.run_at if last else None,
                "last_job_id": last.job_id if last else None,
            }
        ]


bp = Blueprint("schedules", __name__)


@bp.get("/schedules")
@require("read")
@tag(["jobs"])
@validate_response(ScheduleList)
async def list_schedules() -> ScheduleList:
    described = await components().schedule.describe()
    return ScheduleList(schedules=[ScheduleOut(**entry) for entry in described])
