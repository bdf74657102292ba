"""Fixtures for the SMS gateway plugin: a fake gateway, and an app that loads the plugin.

End-to-end tests get the app with a copy of ``plugins/sms_gateway`` in its plugins
directory (the app loads plugins, registers their models and applies their migrations
on start), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from isp.config import Settings
from tests.conftest import NULL_ROUTER, install_plugin
from tests.sms_gateway.gateway_server import FakeGateway
from tests.sms_gateway.loaded import PLUGIN_DIR

NAME = "sms_gateway"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's settings, with the plugin copied into its plugins directory.

    Next to it the router stand-in (``null_router``): texts go out on moves that a
    router plugin carries out; with no plugin driving the device, moves are refused.
    Texts go out after the commit through the outbox: three attempts, retried quickly.
    """
    shutil.copytree(
        PLUGIN_DIR,
        settings.plugins_dir / NAME,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    install_plugin(NULL_ROUTER, settings)
    return settings.model_copy(
        update={"outbox_attempts": 3, "outbox_backoff": 0.05, "outbox_poll_interval": 0.2}
    )



@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    async with FakeGateway() as server:
        yield server
