"""Fleet jobs: back up many devices with bounded concurrency, progress in the ``job`` table.

A fixed pool of workers pulls device ids from a queue, so a fleet of thousands costs
``ISP_BACKUP_CONCURRENCY`` tasks, not thousands. One failing or slow device is recorded
in ``failed`` and never holds up the rest. Progress is written at most every
``PROGRESS_INTERVAL`` seconds and once at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from isp.core.models import Device, Job, JobStatus
from isp.errors import ISPError, NotFound, ValidationFailed

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
DeviceTask = Callable[[Device], Awaitable[Any]]


class JobRunner:
    """Starts jobs as background tasks and cancels them at shutdown."""

    def __init__(
        self,
        concurrency: int,
        *,
        device_timeout: float = 300.0,
        retries: int = 2,
        backoff: float = 1.0,
    ) -> None:
        self._concurrency = concurrency
        self._device_timeout = device_timeout
        self._retries = retries
        self._backoff = backoff
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        kind: str,
        device_ids: list[int] | None,
        work: DeviceTask,
        *,
        prepare: Callable[[list[int]], Awaitable[None]] | None = None,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """Create the job row and start it; unknown ids are refused before anything runs."""
        if device_ids is None:
            ids: list[int] = list(
                await Device.all().order_by("id").values_list("id", flat=True)  # type: ignore[arg-type]
            )
        else:
            ids = list(dict.fromkeys(device_ids))
            found: set[int] = set(
                await Device.filter(id__in=ids).values_list("id", flat=True)  # type: ignore[arg-type]
            )
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise ValidationFailed(
                    f"unknown device ids: {unknown}",
                    errors=[
                        {"loc": ["body", "device_ids"], "msg": f"no device with id {i}"}
                        for i in unknown
                    ],
                )
        job = await Job.create(id=uuid.uuid4(), kind=kind, total=len(ids), status=JobStatus.RUNNING)
        if prepare is not None:
            await prepare(ids)
        task = asyncio.create_task(self._run(job, ids, work, flush), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def wait(self, job_id: uuid.UUID) -> None:
        """Wait for a job started by this runner (CLI and tests)."""
        for task in list(self._tasks):
            if task.get_name() == f"job-{job_id}":
                await task

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        job: Job,
        ids: list[int],
        work: DeviceTask,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for device_id in ids:
            queue.put_nowait(device_id)
        progress = _Progress(job, flush)
        devices = _DeviceCache()
        devices.expect(ids)

        async def worker() -> None:
            while True:
                try:
                    device_id = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._one(device_id, work, progress, devices)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(ids)) or 0):
                    group.create_task(worker())
            await progress.finish(JobStatus.SUCCEEDED)
        except asyncio.CancelledError:
            await asyncio.shield(progress.finish(JobStatus.FAILED, "interrupted by shutdown"))
            raise

    async def _one(
        self, device_id: int, work: DeviceTask, progress: _Progress, devices: _DeviceCache
    ) -> None:
        """One device: a timeout per attempt, retries with backoff for transient failures.

        Transient: a timeout or an error with a 5xx status (unreachable router, dropped
        connection). A 4xx (the router refused a command, a changed host key) is final.
        """
        attempts = 0
        failure: tuple[str, dict[str, Any], bool]
        while True:
            attempts += 1
            try:
                device = await devices.get(device_id, attempts > 1)
                if device is None:
                    raise NotFound(f"device {device_id} was deleted")  # noqa: TRY301
                async with asyncio.timeout(self._device_timeout):
                    await work(device)
            except TimeoutError:
                failure = (f"timed out after {self._device_timeout:g} s", {}, True)
            except ISPError as exc:
                # a partial failure stored what it finished: retrying would store it again
                transient = exc.status_code >= 500 and "stored" not in exc.extra
                failure = (exc.detail, exc.extra, transient)
            except Exception as exc:  # noqa: BLE001 - one device's crash must not stop the job
                log.exception("job step crashed", extra={"device_id": device_id})
                failure = (f"{type(exc).__name__}: {exc}", {}, False)
            else:
                break
            reason, extra, transient = failure
            if not transient or attempts > self._retries:
                progress.fail(device_id, reason, extra, attempts)
                break
            delay = self._backoff * 2 ** (attempts - 1) * (0.5 + random.random())
            log.info(
                "device backup retry",
                extra={"device_id": device_id, "attempt": attempts, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)
        progress.done_one()
        await progress.maybe_flush()


class _DeviceCache:
    """Devices read in pages of ``PAGE`` (one query each), not one query per device."""

    PAGE = 500

    def __init__(self) -> None:
        self._found: dict[int, Device | None] = {}
        self._position: dict[int, int] = {}
        self._pending: list[int] = []
        self._lock = asyncio.Lock()  # the workers start together: one of them reads a page

    def expect(self, ids: list[int]) -> None:
        self._pending = list(ids)
        self._position = {device_id: i for i, device_id in enumerate(ids)}

    async def get(self, device_id: int, fresh: bool = False) -> Device | None:
        if fresh or device_id not in self._position:
            return await Device.get_or_none(id=device_id)
        if device_id not in self._found:
            async with self._lock:
                if device_id not in self._found:
                    start = self._position[device_id]
                    page = self._pending[start : start + self.PAGE]
                    found = {d.id: d for d in await Device.filter(id__in=page)}
                    for pid in page:
                        self._found[pid] = found.get(pid)
        return self._found.pop(device_id, None)


class _Progress:
    def __init__(self, job: Job, flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self.job = job
        self._flush = flush
        self.done = 0
        self.failed: list[dict[str, Any]] = []
        self._flushed_at = time.monotonic()

    def fail(self, device_id: int, reason: str, extra: dict[str, Any], attempts: int = 1) -> None:
        entry: dict[str, Any] = {"device_id": device_id, "reason": reason, "attempts": attempts}
        for key in ("plugin", "hook", "step"):
            if key in extra:
                entry[key] = extra[key]
        if "stored" in extra:  # a partial backup: the kinds that were stored anyway
            entry["stored"] = [item["kind"] for item in extra["stored"]]
        self.failed.append(entry)

    def done_one(self) -> None:
        self.done += 1

    async def maybe_flush(self) -> None:
        if time.monotonic() - self._flushed_at >= PROGRESS_INTERVAL:
            self._flushed_at = time.monotonic()
            if self._flush is not None:
                await self._flush()
            await Job.filter(id=self.job.id).update(done=self.done, failed=list(self.failed))

    async def finish(self, status: JobStatus, reason: str | None = None) -> None:
        if self._flush is not None:
            await self._flush()
        if reason is not None:
            self.failed.append({"device_id": None, "reason": reason})
        if self.failed and status is JobStatus.SUCCEEDED and len(self.failed) == self.job.total:
            status = JobStatus.FAILED
        await Job.filter(id=self.job.id).update(
            done=self.done,
            failed=list(self.failed),
            status=status,
            finished_at=datetime.now(UTC),
        )
