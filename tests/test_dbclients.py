"""Every database call has a deadline and an unavailable database is a 503 naming it.

In-process, on the parametrized databases: SQLite locked by another process's writer,
a PostgreSQL statement that outlives the deadline, and a pool whose connections are all
held. ``tests/faults/`` crashes and pauses a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from quart import Quart
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from isp.app import create_app
from isp.config import Settings
from isp.db import tortoise_config
from isp.dbclients import unavailable_reason
from isp.dbclients.sqlite import READERS
from isp.errors import DatabaseUnavailable
from tests.conftest import Tokens, auth, make_settings

DEADLINE = 1.0
POOL_SIZE = 3  # not Tortoise's default (5): a full pool shows the setting is used


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, db_timeout=DEADLINE, db_pool_size=POOL_SIZE)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    application = create_app(settings)
    async with application.test_app():
        yield application


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sqlite_file_locked_by_another_writer_is_a_prompt_503(
    app: Quart, tokens: Tokens, database_url: str
) -> None:
    client = app.test_client()
    path = database_url.removeprefix("sqlite://")

    def lock() -> sqlite3.Connection:
        other = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        return other

    other = await asyncio.to_thread(lock)
    try:
        started = time.monotonic()
        response = await client.post(
            "/customers", json={"name": "A"}, headers=auth(tokens.operator)
        )
        took = time.monotonic() - started
        problem = await response.get_json()
        assert response.status_code == 503, problem
        assert problem["component"] == "database"
        assert "busy" in problem["detail"]
        assert response.headers["Retry-After"]
        assert took < DEADLINE + 1
    finally:
        await asyncio.to_thread(other.close)
    response = await client.post("/customers", json={"name": "B"}, headers=auth(tokens.operator))
    assert response.status_code == 201


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_statement_past_the_deadline_is_cut_and_the_pool_serves_on(app: Quart) -> None:
    connection = get_connection("default")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="ISP_DB_TIMEOUT"):
        await connection.execute_query("SELECT pg_sleep(30)")
    assert time.monotonic() - started < DEADLINE + 1
    assert (await connection.execute_query("SELECT 1 AS one"))[1][0]["one"] == 1


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_full_pool_is_a_prompt_503_not_a_wait(app: Quart, tokens: Tokens) -> None:
    client = app.test_client()
    held = asyncio.Event()
    release = asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with in_transaction():
            holding += 1
            if holding == POOL_SIZE:  # ISP_DB_POOL_SIZE: the pool is full
                held.set()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(POOL_SIZE)]
    try:
        await asyncio.wait_for(held.wait(), 10)
        started = time.monotonic()
        response = await client.get("/customers", headers=auth(tokens.reader))
        problem = await response.get_json()
        assert response.status_code == 503, problem
        assert problem["component"] == "database"
        assert time.monotonic() - started < DEADLINE + 1
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert (await client.get("/customers", headers=auth(tokens.reader))).status_code == 200


def test_a_psycopg_url_is_warned_about_and_its_pool_waits_no_longer_than_the_deadline(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Only the asyncpg and SQLite clients bound every statement; a psycopg URL keeps
    Tortoise's own client, so the operator is told, and its pool's wait is bounded."""
    url = "psycopg://isp:secret@db.example:5432/isp"
    settings = make_settings(url, tmp_path, db_timeout=2)
    with caplog.at_level("WARNING", "isp.db"):
        config = tortoise_config(settings)["connections"]["default"]
    assert config["engine"] == "tortoise.backends.psycopg"
    assert config["credentials"]["timeout"] == 2
    assert any("no deadline" in r.getMessage() for r in caplog.records)
    assert not any("secret" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sqlite_statement_past_the_deadline_is_interrupted_and_the_next_one_answers(
    app: Quart,
) -> None:
    """SQLite runs statements in one thread, which cannot be cancelled: a statement past its
    deadline is interrupted, so it neither runs on nor holds up the ones after it."""
    connection = get_connection("default")
    runaway = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000)"
        " SELECT count(*) FROM n"
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="ISP_DB_TIMEOUT"):
        await connection.execute_query(runaway)
    assert time.monotonic() - started < DEADLINE + 1
    started = time.monotonic()
    assert (await connection.execute_query("SELECT 1 AS one"))[1][0]["one"] == 1
    assert time.monotonic() - started < 0.5  # not queued behind the runaway statement


async def test_statements_run_with_the_commit_and_one_that_fails_commits_nothing(
    app: Quart, settings: Settings
) -> None:
    """``commit_after`` (the outbox's rows, written with the workflow's COMMIT): the rows
    each statement returned, committed as another connection sees them; a statement that
    fails commits none of them and leaves the transaction to roll back, the client
    serving on."""
    connection = get_connection("default")
    if connection.capabilities.dialect == "sqlite":
        values = "?1, ?2, ?3, ?4"
    else:
        values = "$1, $2, CAST($3 AS JSONB), $4"
    insert = (
        'INSERT INTO "plugin_value" ("plugin", "key", "value", "updated_at") '
        f'VALUES ({values}) RETURNING "id", "key"'
    )

    async def committed() -> list[str]:
        """The keys another connection sees (SQLite's client has one connection only)."""
        query = 'SELECT "key" FROM "plugin_value" ORDER BY "id"'
        if connection.capabilities.dialect != "sqlite":
            return [row["key"] for row in await connection.execute_query_dict(query)]
        path = settings.database_url.removeprefix("sqlite://")

        def read() -> list[str]:
            with contextlib.closing(sqlite3.connect(path)) as other:
                return [key for (key,) in other.execute(query)]

        return await asyncio.to_thread(read)

    at = datetime.now(UTC)
    async with in_transaction() as conn:
        found = await conn.commit_after(insert, [["p", "a", "1", at], ["p", "b", "2", at]])
    assert [row["key"] for row in found] == ["a", "b"]
    assert await committed() == ["a", "b"]

    with pytest.raises(IntegrityError):
        async with in_transaction() as conn:
            await conn.commit_after(insert, [["p", "c", "3", at], ["p", "a", "4", at]])
    assert await committed() == ["a", "b"]  # "c" rolled back with the duplicate
    mine = await connection.execute_query_dict('SELECT "key" FROM "plugin_value" ORDER BY "id"')
    assert [row["key"] for row in mine] == ["a", "b"]  # the client's connection serves on


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_closed_connection_is_unavailable_but_a_misused_one_is_a_bug(
    app: Quart, database_url: str
) -> None:
    """asyncpg raises ``InterfaceError`` both when the connection is gone and when the
    caller misuses one (two statements at once, a use after its release): only the first
    is the database's failure; a 503 for the others would hide the bug."""
    pool = get_connection("default")._pool  # type: ignore[attr-defined]
    connection = await pool.acquire()
    try:
        sleeping = asyncio.create_task(connection.fetch("SELECT pg_sleep(0.5)"))
        await asyncio.sleep(0)  # one turn of the loop: the task is inside its statement
        with pytest.raises(asyncpg.InterfaceError, match="another operation") as concurrent:
            await connection.fetch("SELECT 1")
        await sleeping
    finally:
        await pool.release(connection)
    with pytest.raises(asyncpg.InterfaceError, match="released back") as released:
        await connection.fetch("SELECT 1")
    assert unavailable_reason(concurrent.value) is None
    assert unavailable_reason(released.value) is None

    closed = await asyncpg.connect(database_url)
    await closed.close()
    with pytest.raises(asyncpg.InterfaceError, match="connection is closed") as gone:
        await closed.fetch("SELECT 1")
    assert unavailable_reason(gone.value) is not None
    assert (await get_connection("default").execute_query("SELECT 1 AS one"))[1][0]["one"] == 1


def test_the_pool_size_is_the_setting_unless_the_url_names_one(tmp_path: Path) -> None:
    def maxsize(url: str, **overrides: Any) -> Any:
        settings = make_settings(url, tmp_path, **overrides)
        return tortoise_config(settings)["connections"]["default"]["credentials"]["maxsize"]

    assert maxsize("postgres://isp@db.example/isp") == 20
    assert maxsize("postgres://isp@db.example/isp", db_pool_size=7) == 7
    assert int(maxsize("postgres://isp@db.example/isp?maxsize=9", db_pool_size=7)) == 9


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sqlite_read_past_the_deadline_is_interrupted_on_its_own_connection(
    app: Quart,
) -> None:
    """A read outside a transaction runs on a query-only connection of its own thread
    (``isp.dbclients.sqlite_readers``): past the deadline it is a 503 and is interrupted
    there, so with every reader's read cut, the next reads are all answered at once."""
    connection: Any = get_connection("default")
    runaway = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000)"
        " SELECT count(*) FROM n"
    )
    started = time.monotonic()
    runaways = [connection.execute_read(runaway, []) for _ in range(READERS)]  # one each
    for failed in await asyncio.gather(*runaways, return_exceptions=True):
        assert isinstance(failed, DatabaseUnavailable), failed
        assert "ISP_DB_TIMEOUT" in str(failed)
    assert time.monotonic() - started < DEADLINE + 1
    started = time.monotonic()
    reads = [connection.execute_read("SELECT 1 AS one", []) for _ in range(READERS)]
    answers = await asyncio.gather(*reads)
    assert [rows[0]["one"] for rows in answers] == [1] * READERS
    assert time.monotonic() - started < 0.5  # none waited behind the runaway read
