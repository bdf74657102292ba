"""Reading one record by primary key with the SELECT built once per model and dialect.

A Tortoise queryset builds its SQL anew on every await (filter resolution, pypika
rendering): about three quarters of the cost of ``Model.get_or_none(id=...)`` on SQLite.
The statement for "this model by primary key" never changes, so it is rendered once
(by Tortoise itself) and the row becomes an instance the way Tortoise's executor does
it, through ``Model._init_from_db``. The connection is looked up on every call, so a
read inside ``in_transaction()`` still runs on the transaction's connection; on SQLite
one outside a transaction runs on a query-only connection of its own
(:mod:`isp.dbclients.sqlite_readers`), not behind the read-write connection's lock.

SQLite hands timestamps back as ISO 8601 text, which Tortoise parses in pure Python
(``iso8601``) on every read; they are parsed here with ``datetime.fromisoformat`` (C)
first, and Tortoise's ``to_python_value`` then only applies the time zone, as it does
to PostgreSQL's native values. Text ``fromisoformat`` does not take is left to Tortoise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from tortoise.fields import DatetimeField
from tortoise.models import Model

from isp.dbclients.asyncpg import BoundedAsyncpgClient
from isp.dbclients.sqlite import BoundedSqliteClient

M = TypeVar("M", bound=Model)

_SENTINEL = -7_301_946_285
"""A primary-key value no record has, to find its position among the parameters."""

_statements: dict[tuple[type[Model], str], tuple[str, list[Any], int]] = {}
_timestamps: dict[type[Model], tuple[str, ...]] = {}


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


async def get_by_pk(model: type[M], pk: Any) -> M | None:
    """The record of ``model`` with primary key ``pk``, or None (as ``get_or_none``)."""
    db = model._meta.db
    sql, params, index = _statement(model, db.capabilities.dialect)
    values = list(params)
    values[index] = model._meta.pk.to_db_value(pk, model)
    rows: Sequence[Any]
    if isinstance(db, BoundedSqliteClient | BoundedAsyncpgClient):
        rows = await db.execute_read(sql, values)
    else:
        _, rows = await db.execute_query(sql, values)
    if not rows:
        return None
    if len(rows) > 1:  # a primary key cannot repeat; kept for parity with get_or_none
        raise AssertionError(f"{len(rows)} {model.__name__} rows share primary key {pk!r}")
    return model._init_from_db(**_parsed_timestamps(model, dict(rows[0])))


def _parsed_timestamps(model: type[Model], row: dict[str, Any]) -> dict[str, Any]:
    keys = _timestamps.get(model)
    if keys is None:
        keys = _timestamps[model] = tuple(
            key for key, _, field in model._meta.db_complex_fields
            if isinstance(field, DatetimeField)
        )  # fmt: skip
    for key in keys:
        value = row.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # else Tortoise's own parser has its say
                row[key] = datetime.fromisoformat(value)
    return row
