"""Fixtures for the MikroTik plugin: emulated routers, sessions, and an app that loads it.

Unit tests drive the plugin's modules against a `RouterOSServer`; end-to-end tests get
the app with a copy of ``plugins/mikrotik`` in its plugins directory (the app loads
plugins on start), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from isp.config import Settings
from tests.mikrotik.loaded import PLUGIN_DIR, ssh
from tests.mikrotik.loaded import settings as settings_module
from tests.routeros import RouterOSServer, RouterState


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's settings, with the plugin copied into its plugins directory."""
    shutil.copytree(
        PLUGIN_DIR,
        settings.plugins_dir / "mikrotik",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return settings



@pytest.fixture
def state() -> RouterState:
    return RouterState()


@pytest.fixture
async def router(state: RouterState) -> AsyncIterator[RouterOSServer]:
    async with RouterOSServer(state) as server:
        yield server


@pytest.fixture
def mt_settings() -> Any:
    """The plugin's settings, with short timeouts so failure tests stay fast."""
    return settings_module.MikrotikSettings(
        connect_timeout=5, command_timeout=5, backup_file_wait=2
    )


def target_for(router: RouterOSServer, **changes: Any) -> Any:
    values: dict[str, Any] = {
        "device_id": 7,
        "host": router.host,
        "port": router.port,
        "username": "admin",
        "password": "secret",
        "host_key": None,
    }
    values.update(changes)
    return ssh.Target(**values)


@pytest.fixture
async def session(router: RouterOSServer, mt_settings: Any) -> AsyncIterator[Any]:
    async with ssh.open_session(target_for(router), mt_settings) as opened:
        yield opened
