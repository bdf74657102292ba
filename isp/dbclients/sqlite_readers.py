"""Query-only SQLite connections, each on a thread of its own, for reads outside a transaction.

Tortoise's SQLite client has one connection behind one lock: every statement waits for
the one before it, each a round trip to aiosqlite's thread and back. Under load that
round trip (waking the thread, waiting for a core and the GIL, waking the loop) takes far
longer than the statement, and it is paid in series, so reads queue behind each other
while the event loop has nothing to do. The database is in WAL mode: a read on another
connection never waits for a writer and sees what is committed, as a read on another
pooled PostgreSQL connection does. :class:`ReaderPool` keeps a few such connections,
each owned by one thread (SQLite connections are not shared between threads), and
hands each read to whichever is free; the event loop only waits on a future.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from queue import SimpleQueue
from typing import Any

_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], str | None, Sequence[Any]]
"""The loop to answer on, the future it waits on, the SQL (None: stop) and its values."""


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (deadline, cancelled request)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ReaderPool:
    """``size`` threads, each with its own query-only connection to ``filename``."""

    def __init__(self, filename: str, size: int, busy_timeout_ms: int) -> None:
        self._filename = filename
        self._busy_timeout_ms = busy_timeout_ms
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"sqlite-reader-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    async def fetch(self, sql: str, values: Sequence[Any]) -> list[sqlite3.Row]:
        """The rows of ``sql``; SQLite's own exception when it fails."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[sqlite3.Row]] = loop.create_future()
        self._jobs.put((loop, future, sql, values))
        return await future

    async def close(self) -> None:
        """Stop the threads once the reads queued before are answered; each closes its
        connection (a thread takes one stop job and ends, so each gets one)."""
        loop = asyncio.get_running_loop()
        stopped = [loop.create_future() for _ in self._threads]
        for future in stopped:
            self._jobs.put((loop, future, None, ()))
        await asyncio.gather(*stopped, return_exceptions=True)

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._filename, isolation_level=None, check_same_thread=True, timeout=0
        )
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA query_only = ON")
        return connection

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        while True:
            loop, future, sql, values = self._jobs.get()
            result: Any = None
            error: BaseException | None = None
            try:
                if sql is None:
                    if connection is not None:
                        connection.close()
                else:
                    if connection is None:
                        connection = self._open()
                    result = connection.execute(sql, values).fetchall()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_deliver, future, result, error)
            if sql is None:
                return
