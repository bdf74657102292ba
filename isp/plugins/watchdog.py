"""Hooks that outlive their deadline: left running, tracked, and cut off from the database.

``emit`` waits for a cancelled hook for at most ``ISP_HOOK_GRACE`` seconds. A hook that
ignores its cancellation longer (it catches ``CancelledError`` and keeps going) would
otherwise hold the workflow, its transaction and its database connection for as long as
it likes. Past the grace the dispatcher *abandons* it: the task is detached and kept
here until it ends (so it is not garbage-collected mid-flight and can be counted), the
workflow fails at once with ``HookAbandoned`` (504), and the transaction's connection the
hook was given is discarded (:func:`discard_connection`) rather than returned to the
pool while the hook may still use it. The registry quarantines the plugin.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

log = logging.getLogger("isp.plugins.dispatch")


class Watchdog:
    """The abandoned hook tasks of one registry, until each ends."""

    def __init__(self) -> None:
        self._detached: set[asyncio.Task[Any]] = set()

    def detach(self, task: asyncio.Task[Any]) -> None:
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    @property
    def detached(self) -> int:
        """Abandoned hooks still running."""
        return len(self._detached)


class _Discarded:
    """Stands in for a discarded connection: any use raises, nothing reaches the database."""

    def __getattr__(self, name: str) -> NoReturn:
        raise ConnectionError(
            "this database connection was discarded: the hook using it outlived its "
            "deadline and its workflow was rolled back"
        )

    def __bool__(self) -> bool:
        return True  # Tortoise reconnects a falsy connection; this one must stay dead


async def discard_connection(db: Any) -> None:
    """Roll back the workflow's transaction ``db`` and make sure no hook can use it again.

    PostgreSQL: the session is terminated at once (the server rolls the transaction back)
    and the pool replaces the connection when the workflow releases it; the statement a
    stuck hook may be running dies with it. SQLite has one connection for the process:
    the transaction is rolled back now and this wrapper's link to the connection cut, so
    a late statement of the hook fails instead of running outside any transaction.
    Anything else (no transaction was passed) is left alone.
    """
    # imported here: a sandboxed plugin's worker loads the registry, never the database
    from tortoise.backends.base.client import TransactionalDBClient

    if not isinstance(db, TransactionalDBClient) or db._finalized:  # noqa: SLF001
        return
    connection = db._connection  # noqa: SLF001 - Tortoise exposes no "discard" of its own
    terminate = getattr(connection, "terminate", None)
    if callable(terminate):
        terminate()
        db._finalized = True  # noqa: SLF001 - nothing left to roll back on this side
    else:
        try:
            await db.rollback()
        finally:
            db._connection = _Discarded()  # noqa: SLF001
    log.warning("database connection of an abandoned hook discarded")
