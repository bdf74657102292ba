"""The pytest fixtures isp.testing gives plugin authors (entry point ``isp``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient

from isp.auth.models import Role
from isp.core.events import CORE_EVENTS
from isp.errors import PluginInvalid
from isp.plugins.registry import PluginRegistry
from isp.plugins.specs import SPECS_BY_NAME
from isp.testing import load_plugin
from tests.plugins.conftest import FIXTURE_PLUGINS, Install


def test_plugin_registry_is_fresh_and_knows_the_core_events(
    plugin_registry: PluginRegistry,
) -> None:
    from isp.plugins import registry as application_registry

    assert plugin_registry is not application_registry
    assert plugin_registry.events == CORE_EVENTS | set(SPECS_BY_NAME)
    assert plugin_registry.plugins() == []


async def test_load_plugin_runs_a_real_plugin_folder(plugin_registry: PluginRegistry) -> None:
    loaded = load_plugin(plugin_registry, FIXTURE_PLUGINS / "dummy")
    assert loaded.name == "dummy"
    results = await plugin_registry.emit("service_provision", 42, db=None)
    assert results[0].value == {"provisioned": 42}


def test_load_plugin_reports_what_is_wrong(install: Install, plugin_registry: PluginRegistry) -> (
    None
):
    with pytest.raises(PluginInvalid, match="is not a semantic version"):
        load_plugin(plugin_registry, install("bad_version"))


async def test_db_session_is_a_transaction_on_a_migrated_database(
    db_session: BaseDBAsyncClient,
) -> None:
    await Role.create(name="from-test", permissions=[], using_db=db_session)
    assert await Role.filter(name="from-test").using_db(db_session).count() == 1


async def test_db_session_rolls_back_after_each_test(db_session: BaseDBAsyncClient) -> None:
    # each test gets its own database; the rollback is observable inside one test only
    assert await Role.filter(name="from-test").using_db(db_session).count() == 0


def test_module_is_import_light() -> None:
    source = Path(__file__).resolve().parents[2].joinpath("isp", "testing.py").read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert top_level == [
        "from __future__ import annotations",
        "from collections.abc import AsyncIterator, Iterator",
        "from pathlib import Path",
        "from typing import TYPE_CHECKING",
        "import pytest",
    ]
