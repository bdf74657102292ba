"""Fixtures of the plugin tests: fixture plugins copied into a temporary plugins dir,
an application-like registry, databases and object stores.

``database_url`` (SQLite and PostgreSQL) comes from ``tests/conftest.py``; ``settings``
adds the object store (``store``: local, or the moto S3 server for tests marked
``STORES``); ``migrated`` opens Tortoise on them with the core schema, as the app's
start-up does.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isp.config import Settings
from isp.core.events import CORE_EVENTS
from isp.db import close_db, init_db, migrate
from isp.plugins.loader import detach
from isp.plugins.registry import PluginRegistry
from tests.conftest import make_settings, s3_settings

FIXTURE_PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"

Install = Callable[..., Path]

STORES = pytest.mark.parametrize("store", ["local", "s3"])
"""Run a test on both object stores: the local folder and the moto S3 server."""


@pytest.fixture
def store() -> str:
    """The object store of ``settings``; ``STORES`` parametrizes it."""
    return "local"


@pytest.fixture
def store_settings(request: pytest.FixtureRequest, store: str) -> dict[str, Any]:
    """The settings that select ``store`` (none for the local one)."""
    return s3_settings(request.getfixturevalue("s3_reset")) if store == "s3" else {}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, store_settings: dict[str, Any]) -> Settings:
    return make_settings(database_url, tmp_path, **store_settings)


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    path = tmp_path / "plugins"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def install(plugins_dir: Path) -> Install:
    """Copy fixture plugins (by folder name) into the plugins dir; returns the last path."""

    def copy(*names: str) -> Path:
        target = plugins_dir
        for name in names:
            target = plugins_dir / name
            shutil.copytree(FIXTURE_PLUGINS / name, target)
        return target

    return copy


@pytest.fixture
def app_registry() -> Iterator[PluginRegistry]:
    """A registry configured like the application's singleton, purged afterwards."""
    registry = PluginRegistry()
    registry.declare_events(CORE_EVENTS)
    yield registry
    for name in registry.plugins():
        detach(name)


@pytest.fixture
def sqlite_settings(tmp_path: Path, plugins_dir: Path) -> Settings:
    return Settings(
        database_url=f"sqlite://{tmp_path / 'isp.sqlite3'}",
        data_dir=tmp_path / "data",
        plugins_dir=plugins_dir,
        hook_timeout=5,
        plugin_unsigned="allow",
    )


@pytest.fixture
async def migrated(settings: Settings) -> AsyncIterator[Settings]:
    """Tortoise open on a fresh database of each backend, core schema migrated."""
    await init_db(settings)
    await migrate()
    yield settings
    await close_db()


@pytest.fixture
async def migrated_sqlite(sqlite_settings: Settings) -> AsyncIterator[Settings]:
    await init_db(sqlite_settings)
    await migrate()
    yield sqlite_settings
    await close_db()
