"""The asyncpg client of ``isp.dbclients``: deadlines, terminate-on-failure, pool expiry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    NestedTransactionContext,
    PoolConnectionWrapper,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.connection import get_connections
from tortoise.exceptions import IntegrityError, OperationalError

from isp.availability import Availability
from isp.dbclients import Bounded, deadline_of, unavailable_reason


def _terminate(connection: Any) -> None:
    """End a pooled connection at once. One the server closed is back in the pool already
    (asyncpg detaches it then, and refuses any call on it): nothing is left to end."""
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()


class _PoolConnection(PoolConnectionWrapper[Any]):
    """A pooled connection that is terminated, not released, when its call did not end."""

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if (
            self.connection is not None
            and exc_val is not None
            and (isinstance(exc_val, asyncio.CancelledError) or unavailable_reason(exc_val))
        ):
            _terminate(self.connection)
        await super().__aexit__(exc_type, exc_val, exc_tb)


class BoundedAsyncpgClient(Bounded, AsyncpgDBClient):
    """asyncpg's client with the deadline on connect, acquire and every statement."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        deadline = deadline_of(kwargs)
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._availability = Availability("database")
        # Connecting, and the cancel asyncpg sends after a timed-out query, are bounded
        # too; the server cancels a statement running longer than the deadline.
        self.extra.setdefault("timeout", deadline)
        self.extra.setdefault("command_timeout", deadline)
        self.server_settings.setdefault("statement_timeout", str(int(deadline * 1000)))

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        parent = super()._translate_exceptions
        return await self._bounded(lambda: parent(func, *args, **kwargs))

    async def _connection_lost(self) -> None:
        if self._pool is not None:
            await self._pool.expire_connections()

    def acquire_connection(self) -> Any:
        return _PoolConnection(self, self._pool_init_lock)

    async def execute_read(self, query: str, values: list[Any]) -> Sequence[Any]:
        """The rows of a read-only statement, straight from a pooled connection.

        The same deadline, pool and error translation as ``execute_query``, without its
        layers (Tortoise's wrappers, the statement's kind sniffed from its text): for a
        read by primary key they cost more than asyncpg's own work."""
        return await self._bounded(lambda: self._read(query, values))

    async def _read(self, query: str, values: list[Any]) -> Sequence[Any]:
        if self._pool is None:
            async with self._pool_init_lock:
                if self._pool is None:
                    await self.create_connection(with_db=True)
        pool = self._pool
        assert pool is not None
        connection = await pool.acquire()
        try:
            rows: Sequence[Any] = await connection.fetch(query, *values)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or unavailable_reason(exc):
                _terminate(connection)  # as _PoolConnection: never released half-done
            translated = _translated(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            await pool.release(connection)
        return rows

    def _in_transaction(self) -> TransactionContext:
        return BoundedPooledTransaction(BoundedAsyncpgTransaction(self), self._pool_init_lock)


def _translated(exc: BaseException) -> BaseException:
    """asyncpg's errors as Tortoise's asyncpg client translates them."""
    if isinstance(exc, asyncpg.SyntaxOrAccessError | asyncpg.exceptions.DataError):
        return OperationalError(exc)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(exc)
    return exc


class BoundedAsyncpgTransaction(TransactionWrapper, BoundedAsyncpgClient):
    """One transaction's connection; a failure terminates it (the server rolls back)."""

    def __init__(self, connection: Any) -> None:
        TransactionWrapper.__init__(self, connection)
        self._deadline = connection._deadline
        self._availability = connection._availability
        self._broken = False

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(BoundedAsyncpgTransaction(self))

    def acquire_connection(self) -> Any:
        return TransactionWrapper.acquire_connection(self)

    async def execute_read(self, query: str, values: list[Any]) -> Sequence[Any]:
        """Inside a transaction a read sees its writes: it runs on the transaction's."""
        rows: Sequence[Any] = (await self.execute_query(query, values))[1]
        return rows

    async def _connection_lost(self) -> None:
        self._broken = True
        if self._connection is not None:
            _terminate(self._connection)
        parent: Any = self._parent
        while isinstance(parent, BoundedAsyncpgTransaction):
            parent = parent._parent
        await BoundedAsyncpgClient._connection_lost(parent)

    async def commit(self) -> None:
        await self._bounded(super().commit)

    async def commit_after(self, query: str, values: list[list[Any]]) -> list[dict[str, Any]]:
        """Run ``query`` once per list of ``values``, then COMMIT; the first row each run
        returned. If a statement fails, nothing is committed (the caller rolls back)."""
        found = [(await self.execute_query_dict(query, params))[0] for params in values]
        await self.commit()
        return found

    async def rollback(self) -> None:
        if self._broken:  # the terminated connection took the transaction with it
            self._finalized = True
            return
        await self._bounded(super().rollback)


class BoundedPooledTransaction(TransactionContextPooled):
    """Acquiring the connection and BEGIN together wait no longer than a statement would;
    a connection whose BEGIN failed goes back to the pool terminated, never half-open."""

    client: BoundedAsyncpgTransaction

    async def __aenter__(self) -> Any:
        return await self.client._bounded(self._enter)

    async def _enter(self) -> Any:
        await self.ensure_connection()
        pool = self.client._parent._pool
        assert pool is not None  # ensure_connection opened it
        self.client._connection = await pool.acquire()
        try:
            await self.client.begin()
        except BaseException:
            connection, self.client._connection = self.client._connection, None
            _terminate(connection)
            await pool.release(connection)
            raise
        self.token = get_connections().set(self.connection_name, self.client)
        return self.client


client_class = BoundedAsyncpgClient
