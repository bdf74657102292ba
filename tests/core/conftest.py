"""Fixtures of the core tests: a database shared by real server processes, and a router
plugin installed, as a real deployment has.

A service move is refused while no enabled plugin drives the device's vendor, so the
app of every test here loads ``tests/fixtures/plugins/null_router``: it declares
``"vendors": ["mikrotik"]`` and hooks every service move without touching a router.
The refusal itself is tested with the real MikroTik plugin in
``tests/mikrotik/test_vendor_refusal.py``.
"""

from __future__ import annotations

import pytest

from isp.config import Settings
from tests.conftest import NULL_ROUTER, install_plugin
from tests.plugins.test_sync import shared_database

__all__ = ["shared_database"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's settings, with the router stand-in in its plugins directory."""
    install_plugin(NULL_ROUTER, settings)
    return settings
