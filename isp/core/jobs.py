"""Fleet jobs: a ``Job`` row split into queue tasks of at most ``ISP_BACKUP_CHUNK_SIZE`` devices.

Starting a job writes the ``Job`` row (``total``) and defers one ``backup_chunk`` task per
chunk on the job engine (:mod:`isp.queue`); the workers of every instance pick chunks
up, so instances share a fleet. Each instance backs up at most
``ISP_BACKUP_CONCURRENCY`` devices at once, whatever number of chunks it holds.

Recording is idempotent per job and device (``JobDevice``, unique): a chunk run again
after its instance died skips the devices already recorded, and a flush that races
another instance's records nothing twice. ``done`` and ``failed`` of the job row are
recomputed from those rows after each flush and only ever grow, so concurrent writers
on several instances cannot move progress backwards; the writer that sees every
device recorded finishes the job.

One failing or slow device is recorded in ``failed`` and never holds up the rest: a
timeout per attempt, retries with backoff for transient failures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from isp.batches import batches
from isp.config import Settings
from isp.core.backups import BackupBatch, back_up_device
from isp.core.models import Device, Job, JobDevice, JobStatus
from isp.errors import MAX_LISTED, ISPError, NotFound, ValidationFailed
from isp.metrics import Metrics
from isp.queue import TaskQueue
from isp.storage import ObjectStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
CHUNK_TASK = "backup_chunk"


class FleetJobs:
    """Starts fleet jobs on the queue and runs the chunks this instance's worker picks up."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        queue: TaskQueue,
        metrics: Metrics | None = None,
        *,
        backoff: float = 1.0,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._backoff = backoff
        self._queue = queue
        self._slots = asyncio.Semaphore(settings.backup_concurrency)
        self._chunk = queue.task(CHUNK_TASK, self.run_chunk)
        # enough chunks held at once to keep every slot busy, one more for chunk tails
        queue.set_concurrency(
            math.ceil(settings.backup_concurrency / settings.backup_chunk_size) + 2
        )

    async def start(
        self,
        device_ids: list[int] | None,
        kind: str = "backup",
        *,
        claim: Callable[[Job, BaseDBAsyncClient], Awaitable[None]] | None = None,
    ) -> Job:
        """Create the job row and queue its chunks; unknown ids are refused before anything.

        ``claim`` runs in the job row's transaction (a schedule claims its period there):
        if it raises, no job exists.
        """
        ids = await _device_ids(device_ids)
        async with in_transaction() as conn:
            job = await Job.create(
                id=uuid.uuid4(), kind=kind, total=len(ids), status=JobStatus.RUNNING, using_db=conn
            )
            if claim is not None:
                await claim(job, conn)
        if self._metrics is not None:
            self._metrics.jobs.labels("started").inc()
        if not ids:
            await self.progress(job.id)
            return job
        size = self._settings.backup_chunk_size
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        await self._queue.defer(
            self._chunk, *({"job_id": str(job.id), "device_ids": chunk} for chunk in chunks)
        )
        log.info("fleet job queued", extra={"job_id": str(job.id), "devices": len(ids),
                                            "chunks": len(chunks)})  # fmt: skip
        return job

    async def wait(self, job_id: uuid.UUID, poll: float = 0.2) -> Job:
        """The job once it is finished (CLI and tests), polling its row."""
        while True:
            job = await Job.get(id=job_id)
            if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return job
            await asyncio.sleep(poll)

    async def run_chunk(self, job_id: str, device_ids: list[int]) -> None:
        """The task: back up the chunk's devices not yet recorded for this job."""
        key = uuid.UUID(job_id)
        recorded: set[int] = set(
            await JobDevice.filter(job_id=key, device_id__in=device_ids).values_list(
                "device_id",
                flat=True,  # type: ignore[arg-type]
            )
        )
        todo = [d for d in device_ids if d not in recorded]
        if recorded:
            log.info("chunk resumed", extra={"job_id": job_id, "skipped": len(recorded)})
        batch = BackupBatch(self._store, self._settings.s3_backups_bucket, key)
        await batch.prime(todo)
        devices = {d.id: d for d in await Device.filter(id__in=todo)}
        flusher = _Flusher(self, key, batch)
        try:
            async with asyncio.TaskGroup() as group:
                for device_id in todo:
                    group.create_task(self._one(device_id, devices.get(device_id), batch, flusher))
        finally:
            # what finished is recorded even when the chunk is interrupted (then retried)
            await asyncio.shield(flusher.flush())

    async def _one(
        self, device_id: int, device: Device | None, batch: BackupBatch, flusher: _Flusher
    ) -> None:
        async with self._slots:
            failure = await self._attempts(device_id, device, batch)
        batch.outcome(device_id, failure)
        await flusher.maybe_flush()

    async def _attempts(
        self, device_id: int, device: Device | None, batch: BackupBatch
    ) -> dict[str, Any] | None:
        """One device: a timeout per attempt, retries with backoff for transient failures.

        Transient: a timeout or an error with a 5xx status (unreachable router, dropped
        connection). A 4xx (the router refused a command, a changed host key) is final.
        Returns the ``failed`` entry, or None when the device was backed up.
        """
        timeout = self._settings.backup_device_timeout
        attempts = 0
        while True:
            attempts += 1
            try:
                if attempts > 1 or device is None:
                    device = await Device.get_or_none(id=device_id)
                if device is None:
                    raise NotFound(f"device {device_id} was deleted")  # noqa: TRY301
                async with asyncio.timeout(timeout):
                    await back_up_device(device, self._store, self._settings.s3_backups_bucket,
                                         batch=batch)  # fmt: skip
            except TimeoutError:
                reason, extra, transient = f"timed out after {timeout:g} s", {}, True
            except ISPError as exc:
                # a partial failure stored what it finished: retrying would store it again
                transient = exc.status_code >= 500 and "stored" not in exc.extra
                reason, extra = exc.detail, exc.extra
            except Exception as exc:  # noqa: BLE001 - one device's crash must not stop the job
                log.exception("job step crashed", extra={"device_id": device_id})
                reason, extra, transient = f"{type(exc).__name__}: {exc}", {}, False
            else:
                return None
            if not transient or attempts > self._settings.backup_retries:
                return _failure(device_id, reason, extra, attempts)
            delay = self._backoff * 2 ** (attempts - 1) * (0.5 + random.random())
            log.info(
                "device backup retry",
                extra={"device_id": device_id, "attempt": attempts, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)

    async def progress(self, job_id: uuid.UUID) -> None:
        """Recompute ``done``/``failed`` from the recorded rows; finish the job when complete."""
        done = await JobDevice.filter(job_id=job_id).count()
        failed = list(
            await JobDevice.filter(job_id=job_id, failure__isnull=False)
            .order_by("id")
            .values_list("failure", flat=True)
        )
        await Job.filter(id=job_id, done__lt=done).update(done=done, failed=failed)
        job = await Job.get(id=job_id)
        if done < job.total or job.status is not JobStatus.RUNNING:
            return
        status = JobStatus.FAILED if failed and len(failed) == job.total else JobStatus.SUCCEEDED
        finished = await Job.filter(id=job_id, status=JobStatus.RUNNING).update(
            status=status, done=done, failed=failed, finished_at=datetime.now(UTC)
        )
        if finished and self._metrics is not None:
            self._metrics.jobs.labels(status.value).inc()
        if finished:
            log.info("fleet job finished", extra={"job_id": str(job_id), "status": status.value,
                                                  "failed": len(failed)})  # fmt: skip

    def count(self, recorded: list[tuple[int, dict[str, Any] | None, list[Any]]]) -> None:
        if self._metrics is None:
            return
        for _, failure, rows in recorded:
            self._metrics.backups.labels("device", "failed" if failure else "ok").inc()
            for row in rows:
                outcome = "changed" if row.changed else "unchanged"
                self._metrics.backups.labels(row.kind.value, outcome).inc()


class _Flusher:
    """Writes a chunk's finished devices at most every ``PROGRESS_INTERVAL`` s, and last."""

    def __init__(self, jobs: FleetJobs, job_id: uuid.UUID, batch: BackupBatch) -> None:
        self._jobs, self._job_id, self._batch = jobs, job_id, batch
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def maybe_flush(self) -> None:
        if time.monotonic() - self._at >= PROGRESS_INTERVAL and not self._lock.locked():
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._at = time.monotonic()
            recorded = await self._batch.flush()
            self._jobs.count(recorded)
            await self._jobs.progress(self._job_id)


def _failure(device_id: int, reason: str, extra: dict[str, Any], attempts: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"device_id": device_id, "reason": reason, "attempts": attempts}
    for key in ("plugin", "hook", "event", "function", "step"):
        if key in extra:
            entry[key] = extra[key]
    if "stored" in extra:  # a partial backup: the kinds that were stored anyway
        entry["stored"] = [item["kind"] for item in extra["stored"]]
    return entry


async def _device_ids(device_ids: list[int] | None) -> list[int]:
    if device_ids is None:
        return list(await Device.all().order_by("id").values_list("id", flat=True))  # type: ignore[arg-type]
    ids = list(dict.fromkeys(device_ids))
    found: set[int] = set()
    for batch in batches(ids):
        found.update(await Device.filter(id__in=batch).values_list("id", flat=True))  # type: ignore[arg-type]
    unknown = [i for i in ids if i not in found]
    position = device_ids.index
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:MAX_LISTED])
        more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
        raise ValidationFailed(
            f"{len(unknown)} unknown device ids: {shown}{more}",
            errors=[
                {"loc": ["body", "device_ids", position(i)], "msg": f"no device with id {i}"}
                for i in unknown[:MAX_LISTED]
            ],
            error_count=len(unknown),
        )
    return ids
