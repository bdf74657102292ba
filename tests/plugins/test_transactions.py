"""Hooks writing through the workflow's transaction: all or nothing, on both databases.

The trap this guards against (STACK-NOTES): with ``asyncio.gather``, siblings of a failed
hook keep running after the rollback and their writes land outside the transaction.
"""

from __future__ import annotations

import asyncio

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.transactions import in_transaction

from isp.config import Settings
from isp.errors import PluginError
from isp.plugins.registry import PluginRegistry

EVENT = "customer_created"
WRITERS = ("alpha", "bravo", "charlie")
ROWS = 5


@pytest.fixture
async def scratch(migrated: Settings) -> BaseDBAsyncClient:
    connection = get_connection("default")
    await connection.execute_script(
        "CREATE TABLE hook_writes (plugin VARCHAR(32) NOT NULL, n INTEGER NOT NULL)"
    )
    return connection


async def count_rows(connection: BaseDBAsyncClient) -> int:
    rows = await connection.execute_query_dict("SELECT COUNT(*) AS n FROM hook_writes")
    return int(rows[0]["n"])


def register_writers(registry: PluginRegistry) -> None:
    for name in WRITERS:

        @registry.hook(EVENT, plugin=name)
        async def write(customer: object, *, db: BaseDBAsyncClient, name: str = name) -> int:
            for n in range(ROWS):
                # literal values: the same SQL on SQLite ('?') and PostgreSQL ('$1')
                sql = f"INSERT INTO hook_writes (plugin, n) VALUES ('{name}', {n})"
                await db.execute_query(sql)
                await asyncio.sleep(0.01)
            return ROWS


async def test_failing_hook_rolls_back_what_every_concurrent_hook_wrote(
    scratch: BaseDBAsyncClient, plugin_registry: PluginRegistry
) -> None:
    register_writers(plugin_registry)

    @plugin_registry.hook(EVENT, plugin="zulu")
    async def refuse(customer: object, *, db: BaseDBAsyncClient) -> None:
        await db.execute_query("INSERT INTO hook_writes (plugin, n) VALUES ('zulu', 0)")
        await asyncio.sleep(0.025)  # the writers are half-way through
        raise PluginError("credit check failed")

    async def workflow() -> None:
        async with in_transaction() as conn:
            await conn.execute_query("INSERT INTO hook_writes (plugin, n) VALUES ('core', 0)")
            await plugin_registry.emit(EVENT, "customer", db=conn)

    with pytest.raises(PluginError, match="credit check failed"):
        await workflow()

    assert await count_rows(scratch) == 0
    await asyncio.sleep(0.1)  # a sibling still running would write now, outside the rollback
    assert await count_rows(scratch) == 0


async def test_successful_hooks_commit_with_the_workflow(
    scratch: BaseDBAsyncClient, plugin_registry: PluginRegistry
) -> None:
    register_writers(plugin_registry)

    async with in_transaction() as conn:
        results = await plugin_registry.emit(EVENT, "customer", db=conn)

    assert [r.value for r in results] == [ROWS] * len(WRITERS)
    assert await count_rows(scratch) == ROWS * len(WRITERS)
