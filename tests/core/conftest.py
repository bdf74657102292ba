"""The core's tests run with a router plugin installed, as a real deployment does.

A service move is refused while no enabled plugin drives the device's vendor, so the
app of every test here loads ``tests/fixtures/plugins/null_router``: it declares
``"vendors": ["mikrotik"]`` and hooks every service move without touching a router.
The refusal itself is tested with the real MikroTik plugin in
``tests/mikrotik/test_vendor_refusal.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isp.config import Settings

NULL_ROUTER = Path(__file__).resolve().parents[1] / "fixtures" / "plugins" / "null_router"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's settings, with the router stand-in copied into its plugins directory."""
    shutil.copytree(
        NULL_ROUTER,
        settings.plugins_dir / NULL_ROUTER.name,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return settings
