"""Authenticated reads on both databases: one query for the record, none for a cached
token, and a read by primary key that sees what is committed and its own transaction."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client
from tortoise.connection import get_connection
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from isp import db
from isp.config import Settings
from isp.core.models import Customer
from isp.pk_reads import get_by_pk
from tests.conftest import Tokens, auth, make_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A cache interval far beyond the test's length: a lookup here is never due."""
    return make_settings(database_url, tmp_path, plugin_sync_interval=60)


async def test_a_cached_token_costs_no_query(client: Client, tokens: Tokens) -> None:
    created = await client.post("/customers", json={"name": "Ada"}, headers=auth(tokens.operator))
    assert created.status_code == 201
    path = f"/customers/{(await created.get_json())['id']}"
    assert (await client.get(path, headers=auth(tokens.operator))).status_code == 200
    db = get_connection("default")
    await db.execute_script("ALTER TABLE auth_token RENAME TO auth_token_aside")
    try:
        read = await client.get(path, headers=auth(tokens.operator))
        assert read.status_code == 200, await read.get_data(as_text=True)
        assert (await read.get_json())["name"] == "Ada"
        # A token not yet cached needs the table: the read above made no query for its own.
        uncached = await client.get(path, headers=auth(tokens.reader))
        assert uncached.status_code != 200
    finally:
        await db.execute_script("ALTER TABLE auth_token_aside RENAME TO auth_token")


async def test_read_by_primary_key_sees_commits_and_its_own_transaction(app: object) -> None:
    ada = await Customer.create(name="Ada")
    assert await names(ada.id) == "Ada"
    await Customer.filter(id=ada.id).update(name="Ada L.")
    assert await names(ada.id) == "Ada L."
    assert await get_by_pk(Customer, ada.id + 1000) is None

    async def create_and_read_then_roll_back() -> int:
        async with in_transaction():
            grace = await Customer.create(name="Grace")
            assert await names(grace.id) == "Grace"
            raise Rollback(grace.id)

    with pytest.raises(Rollback) as rolled_back:
        await create_and_read_then_roll_back()
    assert await get_by_pk(Customer, rolled_back.value.args[0]) is None


async def test_a_read_outside_a_transaction_does_not_wait_for_one_in_progress(
    app: object,
) -> None:
    """It sees what is committed while another task's transaction is open (on SQLite the
    transaction holds the one read-write connection)."""
    ada = await Customer.create(name="Ada")
    written, finish = asyncio.Event(), asyncio.Event()

    async def rename_and_hold() -> None:
        async with in_transaction():
            await Customer.filter(id=ada.id).update(name="Ada L.")
            written.set()
            await finish.wait()

    holder = asyncio.create_task(rename_and_hold())
    try:
        await asyncio.wait_for(written.wait(), 10)
        assert await asyncio.wait_for(names(ada.id), 5) == "Ada"
    finally:
        finish.set()
        await holder
    assert await names(ada.id) == "Ada L."


async def test_a_failed_read_raises_as_tortoise_does_and_the_next_one_is_answered(
    app: object,
) -> None:
    read = get_connection("default").execute_read  # type: ignore[attr-defined]
    with pytest.raises(OperationalError, match="no such table|does not exist"):
        await read("SELECT * FROM no_such_table", [])
    ada = await Customer.create(name="Ada")
    assert await names(ada.id) == "Ada"


async def test_a_read_by_primary_key_gives_the_record_tortoise_gives(app: object) -> None:
    """Every field alike, timestamps included (SQLite's text is parsed here, not by
    Tortoise): the same instant, in the same time zone."""
    ada = await Customer.create(name="Ada", email="ada@example.net")
    read, tortoise = await get_by_pk(Customer, ada.id), await Customer.get(id=ada.id)
    assert read is not None
    fields = sorted(Customer._meta.fields_db_projection)  # the columns, not relations
    assert {f: getattr(read, f) for f in fields} == {f: getattr(tortoise, f) for f in fields}
    assert read.created_at.tzinfo is not None
    assert read.created_at.utcoffset() == tortoise.created_at.utcoffset()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_reader_threads_end_when_the_database_closes(settings: Settings) -> None:
    await db.init_db(settings)
    await db.migrate()
    ada = await Customer.create(name="Ada")
    assert await names(ada.id) == "Ada"
    readers = [t for t in threading.enumerate() if t.name.startswith("sqlite-reader-")]
    assert readers
    await db.close_db()
    for thread in readers:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()


class Rollback(Exception):
    pass


async def names(customer_id: int) -> str | None:
    found = await get_by_pk(Customer, customer_id)
    return None if found is None else found.name
