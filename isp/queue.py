"""The job engine: procrastinate, on PostgreSQL or (SQLite) in this process's memory.

Why procrastinate: it is asyncio-native, keeps its queue in PostgreSQL (no broker to
run), and already solves what a fleet needs across instances: a worker that runs
inside our event loop (``run_worker_async``), periodic tasks deferred once per period
whichever worker sees the tick first (a unique row per task and timestamp), retries,
and worker heartbeats from which the tasks of a dead instance are found again.

On PostgreSQL every instance runs one worker on the shared queue. On SQLite (one
process) the same App, tasks, worker, periodic deferrer and retries run on
procrastinate's in-memory connector: the queue is not durable, so tasks still queued
when the process stops are lost (README, "What differs on SQLite").

A dead instance: its worker stops sending heartbeats; every instance checks every few
seconds for tasks held by workers silent for ``ISP_JOB_STALLED_AFTER`` seconds and puts
them back in the queue, where any worker picks them up. Tasks must therefore be
idempotent (fleet chunks skip the devices already recorded).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

import procrastinate
from procrastinate import testing
from procrastinate.exceptions import ConnectorException, ProcrastinateException
from tortoise.connection import get_connection

from isp.config import Settings
from isp.db import MIGRATION_LOCK
from isp.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

QUEUE: Final = "isp"
GRACEFUL_STOP: Final = 1.0  # seconds a stopping worker lets tasks finish; the rest is retried
RESTART_DELAY: Final = 2.0


def postgres_conninfo(database_url: str) -> str:
    """A libpq URI for the Tortoise URL (``postgres://`` / ``asyncpg://``), query dropped."""
    rest = database_url.split("://", 1)[1].split("?", 1)[0]
    return f"postgresql://{rest}"


class TaskQueue:
    """One procrastinate App per service app: its tasks, its worker, its stalled-task check."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.durable = not settings.is_sqlite
        connector: Any
        if self.durable:
            # the same deadline as every other query (ISP_DB_TIMEOUT): waiting for a pooled
            # connection, and each statement on the server
            connector = procrastinate.PsycopgConnector(
                conninfo=postgres_conninfo(settings.database_url),
                min_size=1,
                max_size=8,
                timeout=settings.db_timeout,
                kwargs={"options": f"-c statement_timeout={int(settings.db_timeout * 1000)}"},
            )
        else:
            connector = testing.InMemoryConnector()
        # a period missed by more than this is not deferred late (an instance started
        # after a long outage does not run every night it missed)
        self.app = procrastinate.App(connector=connector, periodic_defaults={"max_delay": 60})
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._concurrency = 1

    def task(self, name: str, func: Callable[..., Any], *, retries: int = 5) -> Any:
        """Register ``func`` as task ``name``; retried (shutdown aborts included)."""
        strategy = procrastinate.RetryStrategy(max_attempts=retries, linear_wait=1)
        return self.app.task(name=name, queue=QUEUE, retry=strategy, pass_context=False)(func)

    def periodic(self, name: str, cron: str, func: Callable[..., Any]) -> Any:
        """Register ``func(timestamp)`` to run once per period of ``cron`` (croniter form)."""
        task = self.task(name, func, retries=3)
        return self.app.periodic(cron=cron, periodic_id=name)(task)

    async def defer(self, task: Any, *payloads: dict[str, Any]) -> None:
        """Queue ``task`` once per payload, within ``ISP_DB_TIMEOUT``; an unreachable or
        hung database is ``DatabaseUnavailable`` (503), as for any other query."""
        try:
            async with asyncio.timeout(self._settings.db_timeout):
                await task.batch_defer_async(*payloads)
        except (TimeoutError, ConnectorException) as exc:
            raise DatabaseUnavailable(
                f"the database is unavailable: the job queue did not answer ({exc!r})"
            ) from exc

    def set_concurrency(self, tasks: int) -> None:
        self._concurrency = max(1, tasks)

    async def open(self) -> None:
        """Open the connector and make sure procrastinate's tables exist (no worker)."""
        await self.app.open_async()
        if self.durable:
            await self._ensure_schema()

    async def start(self) -> None:
        """Open, then run this instance's worker and stalled-task check in the background."""
        await self.open()
        self._stopping = False
        self._worker = asyncio.create_task(self._supervise(), name="job-worker")
        self._watchdog = asyncio.create_task(self._requeue_stalled(), name="job-watchdog")

    async def stop(self) -> None:
        """Stop the worker (running tasks get ``GRACEFUL_STOP`` s, then go back to the queue)."""
        self._stopping = True
        for task in (self._watchdog, self._worker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # noqa: BLE001 - the database may be gone at shutdown
                    log.warning("job worker did not stop cleanly", exc_info=True)
        self._watchdog = self._worker = None
        try:
            await self.app.close_async()
        except Exception:  # noqa: BLE001
            log.warning("job queue did not close cleanly", exc_info=True)

    async def _supervise(self) -> None:
        """Run the worker; if it dies (the database went away), start it again."""
        stalled_after = self._settings.job_stalled_after
        while not self._stopping:
            try:
                await self.app.run_worker_async(
                    queues=[QUEUE],
                    name=f"isp@{socket.gethostname()}",
                    concurrency=self._concurrency,
                    install_signal_handlers=False,
                    update_heartbeat_interval=stalled_after / 3,
                    stalled_worker_timeout=stalled_after,
                    shutdown_graceful_timeout=GRACEFUL_STOP,
                    fetch_job_polling_interval=2.0,
                    delete_jobs="successful",
                )
            except Exception as exc:  # noqa: BLE001 - the worker must come back with the database
                if self._stopping:
                    return
                if isinstance(exc, TimeoutError | ConnectorException):  # the database went away
                    log.warning(
                        "job worker stopped: database unavailable (%r); starting it again in "
                        "%s s", exc, RESTART_DELAY,
                    )  # fmt: skip
                else:
                    log.exception("job worker stopped; starting it again in %s s", RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)
            else:
                return

    async def _requeue_stalled(self) -> None:
        """Put back in the queue the tasks of workers whose heartbeat stopped."""
        stalled_after = self._settings.job_stalled_after
        manager = self.app.job_manager
        while True:
            await asyncio.sleep(stalled_after / 3)
            try:
                for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
                    try:
                        await manager.retry_job(job)
                    except ProcrastinateException:
                        continue  # another instance requeued it first
                    log.warning(
                        "task of a silent worker requeued",
                        extra={"task": job.task_name, "task_id": job.id, "worker": job.worker_id},
                    )
                await manager.prune_stalled_workers(stalled_after)
            except (TimeoutError, ConnectorException) as exc:  # tried again next round
                log.warning("stalled-task check skipped: database unavailable (%r)", exc)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the watchdog
                log.exception("stalled-task check failed")

    async def _ensure_schema(self) -> None:
        """Create procrastinate's schema once, under the migration lock (instances race)."""
        connection = get_connection("default")
        async with connection.acquire_connection() as session:
            await session.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                found = await session.fetchval("SELECT to_regclass('procrastinate_jobs')")
                if found is None:
                    await session.execute(self.app.schema_manager.get_schema())
                    log.info("job queue schema created")
            finally:
                await session.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
