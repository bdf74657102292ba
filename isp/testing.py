"""Pytest fixtures for plugin authors and the ISP test suite (pytest11 entry point ``isp``).

- ``plugin_registry``: a fresh, isolated ``PluginRegistry`` with the core events declared.
  Register hooks on it directly (``@plugin_registry.hook("customer_created")``) or load a
  real plugin folder with :func:`load_plugin`, then ``await plugin_registry.emit(...)``.
- ``db_session``: Tortoise on a temporary SQLite database with the core schema migrated;
  yields a connection inside a transaction that is rolled back after the test. Pass it
  as ``db=`` to emit and to your queries (``.using_db(db_session)``): on SQLite a query
  outside the transaction waits for it to end.

Pytest imports this module at start-up for every run, in every project that installs
the package, so it imports nothing heavy at module level: each fixture imports what it
needs when it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

    from isp.plugins.loader import LoadedPlugin
    from isp.plugins.registry import PluginRegistry

TEST_OWNER = "test"
"""The plugin name hooks registered directly on ``plugin_registry`` are published under."""


@pytest.fixture
def plugin_registry() -> Iterator[PluginRegistry]:
    """An isolated registry (not the application's), the core events declared."""
    from isp.core.events import CORE_EVENTS
    from isp.plugins.loader import detach
    from isp.plugins.registry import PluginRegistry

    registry = PluginRegistry(adhoc_owner=TEST_OWNER)
    registry.declare_events(CORE_EVENTS)
    yield registry
    for name in registry.plugins():
        detach(name)  # plugins loaded with load_plugin() leave nothing in sys.modules


def load_plugin(
    registry: PluginRegistry, folder: str | Path, *, enabled: bool = True
) -> LoadedPlugin:
    """Load the plugin in ``folder`` through the real loader and publish it in ``registry``.

    The manifest, the import and the hooks are validated exactly as at service start;
    a problem raises ``isp.errors.PluginInvalid`` naming the file and the field.
    Lifecycle callbacks are not called.
    """
    from isp.plugins.discovery import describe
    from isp.plugins.loader import load

    loaded = load(describe(Path(folder)), registry.events)
    registry.publish(
        loaded.name,
        loaded.entries,
        enabled=enabled,
        events=loaded.manifest.events,
        vendors=loaded.manifest.vendors,
    )
    return loaded


@pytest.fixture
async def db_session(tmp_path: Path) -> AsyncIterator[BaseDBAsyncClient]:
    """A transaction on a fresh, migrated SQLite database, rolled back after the test."""
    from tortoise.transactions import in_transaction

    from isp.config import Settings
    from isp.db import close_db, init_db, migrate

    settings = Settings(
        database_url=f"sqlite://{tmp_path / 'isp-test.sqlite3'}",
        data_dir=tmp_path / "data",
        plugins_dir=tmp_path / "plugins",
    )
    await init_db(settings)
    try:
        await migrate()
        async with in_transaction() as connection:
            yield connection
            await connection.rollback()
    finally:
        await close_db()
