"""Plugin-owned tables: a plugin's ``models.py`` is its own Tortoise app, ``plugin_<name>``.

- Its ``migrations/`` package holds Tortoise migrations (``isp makemigrations --plugin
  NAME`` writes them), applied on install, upgrade, at start and by ``isp migrate``, each
  once (recorded in ``tortoise_migrations`` under the app label).
- Models are registered with the running Tortoise when the plugin loads, without
  re-initialising it: new models get their default connection and query sets, and
  Tortoise's per-table SQL cache is cleared for them (a reloaded model with a new field
  would otherwise insert without it).
- Every table must start with ``<name>_``: a purge drops exactly the plugin's tables and
  can never touch the core's. Foreign keys into the core use ``related_name=False``.
- Disable keeps the tables; uninstall keeps them unless purged.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pypika_tortoise.queries import Table
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.migrations.executor import MigrationTarget
from tortoise.models import Model

from isp import db
from isp.errors import PluginInvalid
from isp.plugins.hooks import NAMESPACE

log = logging.getLogger("isp.plugins.tables")


def app_label(name: str) -> str:
    return f"plugin_{name}"


def app_config(name: str) -> dict[str, Any]:
    return {
        "models": [f"{NAMESPACE}.{name}.models"],
        "default_connection": "default",
        "migrations": f"{NAMESPACE}.{name}.migrations",
    }


def has_migrations(folder: Path) -> bool:
    return (folder / "migrations" / "__init__.py").is_file()


def ensure_package(name: str, folder: Path) -> None:
    """Make ``isp_plugins.<name>.migrations`` importable without running plugin code."""
    from isp.plugins.loader import _ensure_namespace

    _ensure_namespace()
    package = f"{NAMESPACE}.{name}"
    existing = sys.modules.get(package)
    if existing is None or list(getattr(existing, "__path__", ())) != [str(folder)]:
        # none yet, or one left behind for a folder that is not this one
        module = ModuleType(package)
        module.__path__ = [str(folder)]
        module.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
        sys.modules[package] = module


async def migrate(name: str, folder: Path) -> list[str]:
    """Apply the plugin's pending migrations; returns what ran (empty when none)."""
    if not has_migrations(folder):
        return []
    ensure_package(name, folder)
    applied = await db.migrate(
        {db.CORE_APP: db.core_app_config(), app_label(name): app_config(name)}
    )
    if applied:
        log.info("plugin %s migrated: %s", name, ", ".join(applied), extra={"plugin": name})
    return applied


async def applied(name: str) -> list[str]:
    """The plugin's applied migrations, oldest first (empty before its first install)."""
    conn = get_connection("default")
    placeholder = "$1" if conn.capabilities.dialect == "postgres" else "?"
    try:
        _, rows = await conn.execute_query(
            f'SELECT "name" FROM "tortoise_migrations" WHERE "app" = {placeholder} '
            'ORDER BY "applied_at", "name"',
            [app_label(name)],
        )
    except Exception:  # noqa: BLE001 - no migration table yet: nothing applied
        return []
    return [str(row["name"]) for row in rows]


async def migrate_back(name: str, folder: Path, to: list[str]) -> list[str]:
    """Undo the plugin's migrations applied after ``to`` (a failed install or upgrade).

    Needs the migration files of the version that applied them, so call it before that
    version's folder is swapped out.
    """
    if not has_migrations(folder) or await applied(name) == to:
        return []
    ensure_package(name, folder)
    apps = {db.CORE_APP: db.core_app_config(), app_label(name): app_config(name)}
    target = MigrationTarget(app_label=app_label(name), name=to[-1] if to else "__first__")
    undone = await db.migrate(apps, [target])
    log.warning("plugin %s migrations undone: %s", name, ", ".join(undone), extra={"plugin": name})
    return undone


def register(name: str, module: ModuleType) -> list[str]:
    """Register the models of ``module`` as app ``plugin_<name>``; returns their tables."""
    label = app_label(name)
    models = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Model)
        and value is not Model
        and not value._meta.abstract
        and value.__module__ == module.__name__
    ]
    for model in models:
        table = model._meta.db_table or ""
        if not table.startswith(f"{name}_"):
            raise PluginInvalid(
                f"plugins/{name}/models.py: {model.__name__}: set Meta.table to a name "
                f"starting with {name + '_'!r} (found {table or 'none'!r}); plugin tables "
                "are prefixed so that a purge can only drop the plugin's own",
                plugin=name,
            )
    if not models:
        return []
    apps = Tortoise.apps
    registered = apps.init_app(label, [module])
    for model in registered.values():
        model._meta.default_connection = "default"
        model._meta.finalise_model()
        model._meta.basetable = Table(name=model._meta.db_table, schema=model._meta.schema)
        basequery = model._meta.db.query_class.from_(model._meta.basetable)
        model._meta.basequery = basequery
        model._meta.basequery_all_fields = basequery.select(*model._meta.db_fields)
    tables = sorted(m._meta.db_table for m in registered.values())
    for key in [k for k in EXECUTOR_CACHE if k[2] in tables]:
        del EXECUTOR_CACHE[key]
    return tables


def unregister(name: str) -> None:
    Tortoise.apps.apps.pop(app_label(name), None)


def registered_tables(name: str) -> list[str]:
    models = Tortoise.apps.apps.get(app_label(name), {})
    return sorted(m._meta.db_table for m in models.values())


async def drop(name: str, tables: list[str]) -> None:
    """Purge: drop the plugin's tables and forget its migrations."""
    conn = get_connection("default")
    for table in tables:
        if not table.startswith(f"{name}_"):  # register() guarantees it; never trust twice
            raise PluginInvalid(f"refusing to drop {table!r}: not a table of {name}")
        await conn.execute_script(f'DROP TABLE IF EXISTS "{table}"')
    placeholder = "$1" if conn.capabilities.dialect == "postgres" else "?"
    await conn.execute_query(
        f'DELETE FROM "tortoise_migrations" WHERE "app" = {placeholder}', [app_label(name)]
    )
    log.info("plugin %s tables dropped: %s", name, ", ".join(tables), extra={"plugin": name})
