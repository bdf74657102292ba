"""The message table: its migrations match the model (NetBox's "makemigrations --check")."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from isp import db
from isp.plugins import tables
from tests.sms_gateway.loaded import PLUGIN_DIR

NAME = "sms_gateway"


@pytest.fixture
def plugin_package() -> Iterator[None]:
    """``isp_plugins.sms_gateway`` importable for the check, and gone again after it."""
    package = f"isp_plugins.{NAME}"
    before = {k for k in sys.modules if k == package or k.startswith(f"{package}.")}
    assert not before, "another test left the plugin in sys.modules"
    tables.ensure_package(NAME, PLUGIN_DIR)
    yield
    for key in [k for k in sys.modules if k == package or k.startswith(f"{package}.")]:
        del sys.modules[key]


@pytest.mark.usefixtures("plugin_package")
async def test_models_and_migrations_agree() -> None:
    """Fails when models.py changed without a migration in plugins/sms_gateway/migrations."""
    label = tables.app_label(NAME)
    apps = {label: tables.app_config(NAME), db.CORE_APP: db.core_app_config()}
    # The core's own drift is tests/test_migrations.py's business.
    changes = await db.pending_model_changes(apps)
    assert [c for c in changes if c.startswith(f"{label}.")] == []
