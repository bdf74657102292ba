"""Pytest fixtures for plugin authors and the ISP test suite (pytest11 entry point ``isp``).

- ``plugin_registry``: a fresh, isolated ``PluginRegistry`` with the core events declared.
  Register hooks on it directly (``@plugin_registry.hook("customer_created")``) or load a
  real plugin folder with :func:`load_plugin`, then ``await plugin_registry.emit(...)``.
- ``db_session``: Tortoise on a temporary SQLite database with the core schema migrated;
  yields a connection inside a transaction that is rolled back after the test. Pass it
  as ``db=`` to emit and to your queries (``.using_db(db_session)``): on SQLite a query
  outside the transaction waits for it to end.
- factories for the domain objects hooks receive, saved through ``db``:
  :func:`make_customer`, :func:`make_plan`, :func:`make_device`, :func:`make_service`
  (a service comes with its ``customer``, ``plan`` and ``device`` loaded, as in a
  workflow). Secrets are encrypted with a throwaway key when no service key is set.

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

    from isp.core.models import Customer, Device, Plan, Service
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
    from isp.plugins.specs import SPECS_BY_NAME

    registry = PluginRegistry(adhoc_owner=TEST_OWNER)
    registry.declare_events({*CORE_EVENTS, *SPECS_BY_NAME})
    yield registry
    registry.close()
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


# --- factories -------------------------------------------------------------------------

_counter = iter(range(1, 1 << 62))


def _box_for_tests() -> None:
    """Secrets need a key: a throwaway one when the process has none (a plugin's tests)."""
    from cryptography.fernet import Fernet

    from isp.crypto import SecretBox, install_box, process_box
    from isp.errors import ISPError

    try:
        process_box()
    except ISPError:
        install_box(SecretBox(Fernet.generate_key().decode()))


async def make_customer(db: BaseDBAsyncClient, **fields: object) -> Customer:
    """A saved ``Customer``; ``fields`` override the defaults (``name``, ``email``...)."""
    from isp.core.models import Customer

    n = next(_counter)
    values: dict[str, object] = {"name": f"Customer {n}", "email": f"customer{n}@example.net"}
    return await Customer.create(using_db=db, **{**values, **fields})


async def make_plan(db: BaseDBAsyncClient, **fields: object) -> Plan:
    """A saved ``Plan`` (``download_mbps`` 100, ``upload_mbps`` 20 unless given)."""
    from isp.core.models import Plan

    n = next(_counter)
    values: dict[str, object] = {"name": f"plan-{n}", "download_mbps": 100, "upload_mbps": 20}
    return await Plan.create(using_db=db, **{**values, **fields})


async def make_device(
    db: BaseDBAsyncClient, *, password: str = "router-secret", **fields: object
) -> Device:
    """A saved MikroTik ``Device`` at 192.0.2.1 (TEST-NET); ``password`` is encrypted."""
    from isp.core.models import Device, Vendor
    from isp.crypto import process_box

    _box_for_tests()
    n = next(_counter)
    values: dict[str, object] = {
        "name": f"router-{n}", "vendor": Vendor.MIKROTIK, "host": "192.0.2.1",
        "port": 22, "username": "admin", "password_enc": process_box().encrypt(password),
    }  # fmt: skip
    return await Device.create(using_db=db, **{**values, **fields})


async def make_service(
    db: BaseDBAsyncClient,
    *,
    customer: Customer | None = None,
    plan: Plan | None = None,
    device: Device | None = None,
    password: str = "pppoe-secret",
    **fields: object,
) -> Service:
    """A saved ``Service`` with ``customer``, ``plan`` and ``device`` (made when not given)."""
    from isp.core.models import Service
    from isp.crypto import process_box

    _box_for_tests()
    customer = customer or await make_customer(db)
    plan = plan or await make_plan(db)
    device = device or await make_device(db)
    values: dict[str, object] = {
        "username": f"pppoe{next(_counter)}", "password_enc": process_box().encrypt(password),
    }  # fmt: skip
    service = await Service.create(
        using_db=db, customer=customer, plan=plan, device=device, **{**values, **fields}
    )
    service.customer, service.plan, service.device = customer, plan, device
    return service
