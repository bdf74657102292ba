"""Reading one record by primary key with the SELECT built once per model and dialect.

A Tortoise queryset builds its SQL anew on every await (filter resolution, pypika
rendering): about three quarters of the cost of ``Model.get_or_none(id=...)`` on SQLite.
The statement for "this model by primary key" never changes, so it is rendered once
(by Tortoise itself) and the row becomes an instance the way Tortoise's executor does
it, through ``Model._init_from_db``. The connection is looked up on every call, so a
read inside ``in_transaction()`` still runs on the transaction's connection.

On a SQLite file, a read outside a transaction runs on a second, query-only connection
in the event loop's thread (:class:`_LoopReader`). aiosqlite hands every query to its own
thread and back; with requests in flight, that hand-off (two GIL switches and a wake-up
of the loop) costs ~150 µs of CPU, where the read itself takes ~3 µs. The database is in
WAL mode, so the reader never waits for a writer: it sees what is committed, as a read on
another pooled PostgreSQL connection does. It never waits on a lock either (busy timeout
0); if SQLite answers "busy", the read goes the usual way.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.backends.sqlite.client import SqliteClient
from tortoise.models import Model

M = TypeVar("M", bound=Model)

_SENTINEL = -7_301_946_285
"""A primary-key value no record has, to find its position among the parameters."""

_statements: dict[tuple[type[Model], str], tuple[str, list[Any], int]] = {}


def _statement(model: type[Model], dialect: str) -> tuple[str, list[Any], int]:
    """SQL, parameters and the index of the primary key among them, built once."""
    key = (model, dialect)
    found = _statements.get(key)
    if found is None:
        query = model.filter(pk=_SENTINEL).limit(2)
        query._make_query()
        sql, params = query.query.get_parameterized_sql()
        found = (sql, list(params), list(params).index(_SENTINEL))
        _statements[key] = found
    return found


class _LoopReader:
    """Query-only SQLite connections, one per open Tortoise SQLite client (see above)."""

    def __init__(self) -> None:
        self._connections: weakref.WeakKeyDictionary[SqliteClient, sqlite3.Connection] = (
            weakref.WeakKeyDictionary()
        )

    def rows(self, db: BaseDBAsyncClient, sql: str, values: list[Any]) -> Sequence[Any] | None:
        """The rows, or None where this reader does not apply or SQLite is busy."""
        if (
            not isinstance(db, SqliteClient)
            or isinstance(db, TransactionalDBClient)
            or db.filename == ":memory:"
        ):
            return None
        if db._connection is None:  # closed, or not opened yet: the usual path opens it
            stale = self._connections.pop(db, None)
            if stale is not None:
                stale.close()
            return None
        connection = self._connections.get(db)
        if connection is None:
            connection = self._connections[db] = _open_reader(db.filename)
        try:
            return connection.execute(sql, values).fetchall()
        except sqlite3.DatabaseError:  # busy or locked (never wait here), or worse: the
            return None  # usual path answers, with Tortoise's own errors


def _open_reader(filename: str) -> sqlite3.Connection:
    connection = sqlite3.connect(filename, timeout=0, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA query_only = ON")
    return connection


_reader = _LoopReader()


async def get_by_pk(model: type[M], pk: Any) -> M | None:
    """The record of ``model`` with primary key ``pk``, or None (as ``get_or_none``)."""
    db = model._meta.db
    sql, params, index = _statement(model, db.capabilities.dialect)
    values = list(params)
    values[index] = model._meta.pk.to_db_value(pk, model)
    rows: Sequence[Any] | None = _reader.rows(db, sql, values)
    if rows is None:
        _, rows = await db.execute_query(sql, values)
    if not rows:
        return None
    if len(rows) > 1:  # a primary key cannot repeat; kept for parity with get_or_none
        raise AssertionError(f"{len(rows)} {model.__name__} rows share primary key {pk!r}")
    return model._init_from_db(**rows[0])
