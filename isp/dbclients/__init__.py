"""Tortoise clients with a deadline on every statement: the database's one error boundary.

Tortoise and its drivers wait as long as the server makes them: a stopped PostgreSQL
(SIGSTOP) hangs every query, a full pool hangs every acquire, and a dead server shows up
as a different driver exception in each code path. These subclasses of Tortoise's
asyncpg and SQLite clients run every statement, pool acquire, BEGIN, COMMIT and ROLLBACK
under ``ISP_DB_TIMEOUT`` and translate what means "the database did not answer"
(timeouts, refused or lost connections, server shutdown, too many connections, a busy or
unopenable SQLite file) into :class:`~isp.errors.DatabaseUnavailable`, at this one place.
A query's own failure (an integrity error, bad SQL) passes through unchanged.

A PostgreSQL connection that failed or timed out is terminated rather than released:
waiting for a hung server to acknowledge a cancel or a ROLLBACK would outlive the
deadline, and the server rolls back a transaction whose connection is gone. The pool's
other connections are expired too, so after an outage each is reopened instead of
failing once more. The server enforces the same bound (``statement_timeout``).

Selected by ``engine: "isp.dbclients.asyncpg"`` or ``"isp.dbclients.sqlite"`` in the Tortoise
config (see ``isp.db``); Tortoise's migrations pick their SQL dialect by those module names.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from tortoise.exceptions import DBConnectionError, OperationalError

from isp.availability import Availability
from isp.errors import DatabaseUnavailable

T = TypeVar("T")

DEADLINE_KEY = "isp_deadline"
"""The credentials key that carries ``ISP_DB_TIMEOUT`` to the client (popped, never sent)."""

DEFAULT_DEADLINE = 10.0

# SQLite result codes (the low byte of ``sqlite_errorcode``) that mean the file is busy,
# gone or unwritable rather than that the statement is wrong.
_SQLITE_UNAVAILABLE = {
    5: "the database file is busy (another writer holds it)",  # SQLITE_BUSY
    6: "a table is locked",  # SQLITE_LOCKED
    9: "the statement was interrupted: a statement ran past its deadline",  # SQLITE_INTERRUPT
    10: "disk I/O error",  # SQLITE_IOERR
    13: "the disk is full",  # SQLITE_FULL
    14: "the database file cannot be opened",  # SQLITE_CANTOPEN
}

_PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # statement_timeout, shutdown, starting
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    DBConnectionError,
)

# Bound now: once ``isp.dbclients.asyncpg`` is imported, the name ``asyncpg`` in this
# package's namespace is that submodule, not the driver.
_PG_INTERFACE = asyncpg.InterfaceError
_PG_CLOSED = re.compile(r"connection is closed|pool is clos")
"""The ``InterfaceError`` messages that mean the connection or the pool is gone. asyncpg
raises the same class for misuse ("another operation is in progress", a connection used
after its release): a bug in the caller, which a 503 would hide."""


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the database did not answer; None when it is the query's own."""
    if isinstance(exc, TimeoutError):
        return "no answer within the deadline"
    if isinstance(exc, OperationalError):
        inner = exc.args[0] if exc.args else exc.__context__
        if isinstance(inner, sqlite3.Error):
            code = getattr(inner, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _SQLITE_UNAVAILABLE:
                return _SQLITE_UNAVAILABLE[code & 0xFF]
        return None
    if isinstance(exc, _PG_UNAVAILABLE) or (
        isinstance(exc, _PG_INTERFACE) and _PG_CLOSED.search(str(exc))
    ):
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None


class Bounded:
    """Runs one database call under the deadline and reports its outcome."""

    _deadline: float
    _availability: Availability

    async def _bounded(self, call: Callable[[], Awaitable[T]], *, statement: bool = True) -> T:
        """``call()`` under the deadline; ``statement``: it runs a statement (not only
        waits for a connection or a transaction lock), which a timeout may interrupt."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._deadline):
                result = await call()
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self._deadline:g} s (ISP_DB_TIMEOUT)"
                if statement:
                    self._timed_out()
            await self._connection_lost()
            self._availability.failed(reason, started)
            raise DatabaseUnavailable(f"the database is unavailable: {reason}") from exc
        self._availability.answered(started)
        return result

    def _timed_out(self) -> None:
        """The call ran past the deadline: stop what it left running, if the driver can."""

    async def _connection_lost(self) -> None:
        """Drop what the failed call used, so nothing waits on it again."""


def deadline_of(kwargs: dict[str, Any]) -> float:
    return float(kwargs.pop(DEADLINE_KEY, DEFAULT_DEADLINE))
