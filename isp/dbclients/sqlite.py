"""The SQLite client of ``isp.dbclients``: a busy timeout, the deadline on every call, and a
statement past its deadline interrupted."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from tortoise.backends.base.client import NestedTransactionContext, TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.connection import get_connections
from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError

from isp.availability import Availability
from isp.dbclients import Bounded, deadline_of
from isp.dbclients.sqlite_readers import ReaderPool

READERS = 2
"""Query-only connections (one thread each) for reads outside a transaction. Two served
authenticated reads 7 % faster than three (1668 against 1552 requests per second, medians
of four interleaved rounds, ``tests/bench/http.py``'s load on 2 cores): more threads only
contend for the GIL."""


class BoundedSqliteClient(Bounded, SqliteClient):
    """SQLite's client with a busy timeout and the deadline on every statement."""

    def __init__(self, file_path: str, **kwargs: Any) -> None:
        deadline = deadline_of(kwargs)
        super().__init__(file_path, **kwargs)
        self._deadline = deadline
        self._availability = Availability("database")
        # Wait for another process's write lock a little less than the deadline, so the
        # answer is SQLite's "busy" rather than a cut-off statement.
        self.pragmas.setdefault("busy_timeout", int(deadline * 800))
        self._readers: ReaderPool | None = None

    async def execute_read(self, query: str, values: list[Any]) -> Sequence[Any]:
        """The rows of a read-only statement, on a query-only connection of its own
        (:mod:`isp.dbclients.sqlite_readers`); an in-memory database has only the one."""
        if self.filename == ":memory:":
            rows: Sequence[Any] = (await self.execute_query(query, values))[1]
            return rows
        # A read past the deadline is interrupted on its own connection (the pool does
        # it when the wait is cancelled), never the read-write one's statement.
        return await self._bounded(lambda: self._read(query, values), statement=False)

    async def _read(self, query: str, values: list[Any]) -> Sequence[Any]:
        if self._readers is None:
            self._readers = ReaderPool(self.filename, READERS, int(self.pragmas["busy_timeout"]))
        try:
            return await self._readers.fetch(query, values)
        except sqlite3.OperationalError as exc:  # as Tortoise's client translates them
            raise OperationalError(exc) from exc
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(exc) from exc

    async def close(self) -> None:
        readers, self._readers = self._readers, None
        if readers is not None:
            await readers.close()
        await super().close()

    def _timed_out(self) -> None:
        """Interrupt the statement running on the connection (the one that timed out, or
        an older one ahead of it in the connection's queue, past its deadline too): a
        thread cannot be cancelled, and without this the statement would run on and every
        later one wait behind it. Whoever awaits an interrupted statement gets 503."""
        connection = self._connection
        if isinstance(connection, aiosqlite.Connection) and connection._connection is not None:  # noqa: SLF001
            with contextlib.suppress(sqlite3.Error):
                connection._conn.interrupt()  # noqa: SLF001 - thread-safe; aiosqlite queues its own

    async def execute_insert(self, query: str, values: list[Any]) -> Any:
        return await self._bounded(lambda: SqliteClient.execute_insert(self, query, values))

    async def execute_many(self, query: str, values: list[list[Any]]) -> None:
        await self._bounded(lambda: SqliteClient.execute_many(self, query, values))

    async def execute_query(self, query: str, values: list[Any] | None = None) -> Any:
        return await self._bounded(lambda: SqliteClient.execute_query(self, query, values))

    async def execute_query_dict(self, query: str, values: list[Any] | None = None) -> Any:
        return await self._bounded(lambda: SqliteClient.execute_query_dict(self, query, values))

    async def execute_script(self, query: str) -> None:
        await self._bounded(lambda: SqliteClient.execute_script(self, query))

    def _in_transaction(self) -> TransactionContext:
        return BoundedSqliteTransactionContext(BoundedSqliteTransaction(self), self._lock)


class BoundedSqliteTransaction(SqliteTransactionWrapper, BoundedSqliteClient):
    """One SQLite transaction; its statements and its end are bounded like any other."""

    def __init__(self, connection: Any) -> None:
        SqliteTransactionWrapper.__init__(self, connection)
        self._deadline = connection._deadline
        self._availability = connection._availability
        self._readers = None

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(BoundedSqliteTransaction(self))

    async def execute_read(self, query: str, values: list[Any]) -> Sequence[Any]:
        """Inside a transaction a read sees its writes: it runs on the transaction's."""
        rows: Sequence[Any] = (await self.execute_query(query, values))[1]
        return rows

    async def execute_many(self, query: str, values: list[list[Any]]) -> None:
        await self._bounded(lambda: SqliteTransactionWrapper.execute_many(self, query, values))

    async def begin(self) -> None:
        await self._bounded(super().begin)

    async def commit(self) -> None:
        await self._bounded(super().commit)

    async def rollback(self) -> None:
        await self._bounded(super().rollback)

    async def commit_after(self, query: str, values: list[list[Any]]) -> list[dict[str, Any]]:
        """Run ``query`` once per list of ``values``, then COMMIT, in one call on the
        connection's thread: one hop to it instead of one per statement. Returns the
        first row each run returned. If a statement fails, nothing is committed and the
        transaction stays open for the caller to roll back (as after a failed COMMIT)."""
        if self._finalized:
            raise TransactionManagementError("Transaction already finalised")
        connection = self._connection

        def run() -> list[dict[str, Any]]:
            raw = connection._conn  # noqa: SLF001 - on aiosqlite's thread, its connection
            found: list[dict[str, Any]] = []
            for params in values:
                cursor = raw.execute(query, params)
                try:
                    row = cursor.fetchone()
                    names = [column[0] for column in cursor.description or ()]
                finally:
                    cursor.close()
                found.append(dict(zip(names, row or (), strict=False)))
            raw.commit()
            return found

        async def in_thread() -> list[dict[str, Any]]:
            execute: Any = connection._execute  # noqa: SLF001 - aiosqlite's own queue
            try:
                found: list[dict[str, Any]] = await execute(run)
            except sqlite3.OperationalError as exc:  # as Tortoise translates its own calls
                raise OperationalError(exc) from exc
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(exc) from exc
            return found

        found = await self._bounded(in_thread)
        self._finalized = True
        return found

    async def savepoint(self) -> None:
        await self._bounded(super().savepoint)

    async def savepoint_rollback(self) -> None:
        await self._bounded(super().savepoint_rollback)

    async def release_savepoint(self) -> None:
        await self._bounded(super().release_savepoint)


class BoundedSqliteTransactionContext(SqliteTransactionContext):
    """Waiting for another transaction to finish is bounded by the deadline too."""

    connection: BoundedSqliteTransaction

    async def __aenter__(self) -> Any:
        # waiting for another transaction is not a statement: its timeout interrupts nothing
        return await self.connection._bounded(self._enter, statement=False)

    async def _enter(self) -> Any:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            await self.connection.begin()
        except BaseException:
            self._trxlock.release()
            raise
        self.token = get_connections().set(self.connection_name, self.connection)
        return self.connection


client_class = BoundedSqliteClient
