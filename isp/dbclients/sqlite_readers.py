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

A read whose caller stopped waiting (its deadline passed, its request was cancelled) is
interrupted on its connection, as the read-write connection's statements are, so it
neither runs on nor holds up the reads queued behind it; one not yet started is skipped.
Each thread takes the reads that are waiting when it is free (up to :data:`BATCH`) and
answers them with one wake-up of the event loop: under load, that wake-up (a write to the
loop's self-pipe) cost more than the read. A slow read holds up the others of its batch;
the reads sent here are by primary key.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from queue import Empty, SimpleQueue
from typing import Any

BATCH = 8
"""Most reads one thread runs before it answers them together."""

_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], str | None, Sequence[Any]]
"""The loop to answer on, the future it waits on, the SQL (None: stop) and its values."""

_Answer = tuple[asyncio.Future[Any], Any, BaseException | None]


def _deliver(answers: list[_Answer]) -> None:
    for future, result, error in answers:
        if future.done():  # the caller gave up (deadline, cancelled request)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Reader:
    """One thread's connection and the read it is running, for an interrupt."""

    def __init__(self) -> None:
        self.connection: sqlite3.Connection | None = None
        self.running: asyncio.Future[Any] | None = None


class ReaderPool:
    """``size`` threads, each with its own query-only connection to ``filename``."""

    def __init__(self, filename: str, size: int, busy_timeout_ms: int) -> None:
        self._filename = filename
        self._busy_timeout_ms = busy_timeout_ms
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._lock = threading.Lock()  # guards each reader's ``running``
        self._readers = [_Reader() for _ in range(size)]
        self._threads = [
            threading.Thread(
                target=self._serve, args=(reader,), name=f"sqlite-reader-{n}", daemon=True
            )
            for n, reader in enumerate(self._readers)
        ]
        for thread in self._threads:
            thread.start()

    async def fetch(self, sql: str, values: Sequence[Any]) -> list[sqlite3.Row]:
        """The rows of ``sql``; SQLite's own exception when it fails. Cancelled (the
        deadline), the read is interrupted if it is running and skipped if not yet."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[sqlite3.Row]] = loop.create_future()
        self._jobs.put((loop, future, sql, values))
        try:
            return await future
        except asyncio.CancelledError:
            self._interrupt(future)
            raise

    def _interrupt(self, future: asyncio.Future[Any]) -> None:
        with self._lock:
            for reader in self._readers:
                if reader.running is future and reader.connection is not None:
                    with contextlib.suppress(sqlite3.Error):
                        reader.connection.interrupt()  # thread-safe

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

    def _serve(self, reader: _Reader) -> None:
        while True:
            jobs = [self._jobs.get()]
            while len(jobs) < BATCH and jobs[-1][2] is not None:
                try:
                    jobs.append(self._jobs.get_nowait())
                except Empty:
                    break
            answers: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
            for loop, future, sql, values in jobs:
                answers.setdefault(loop, []).append(self._run(reader, future, sql, values))
            for loop, answered in answers.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_deliver, answered)
            if jobs[-1][2] is None:
                return

    def _run(
        self, reader: _Reader, future: asyncio.Future[Any], sql: str | None, values: Sequence[Any]
    ) -> _Answer:
        """One job on this thread's connection (opened on the first read)."""
        try:
            if sql is None:
                if reader.connection is not None:
                    reader.connection.close()
                return future, None, None
            if future.done():  # cancelled while it waited: nobody wants its rows
                return future, None, None
            if reader.connection is None:
                reader.connection = self._open()
            with self._lock:
                reader.running = future
            try:
                return future, reader.connection.execute(sql, values).fetchall(), None
            finally:
                with self._lock:
                    reader.running = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            return future, None, exc
