"""Database wiring: the Tortoise config of the core app, start/stop, and migrations.

Migrations use Tortoise's own operation-based migrations rather than aerich: one set of
files builds the same schema on SQLite and PostgreSQL, and a plugin's migrations can be
applied while the server runs without re-initialising Tortoise (see README, "Migrations").
Core migration files live in the repository's ``migrations/`` folder, importable as the
``isp_migrations`` package.

Every statement runs under ``ISP_DB_TIMEOUT`` through the clients of ``isp.dbclients``,
which also turn an unreachable or hung database into ``DatabaseUnavailable`` (503).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.connection import get_connection
from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from isp import dbclients
from isp.config import Settings

log = logging.getLogger(__name__)

CORE_APP = "core"
CORE_MODELS: list[str] = [
    "isp.core.models",
    "isp.auth.models",
    "isp.plugins.models",
    "isp.audit",
]
CORE_MIGRATIONS = "isp_migrations"
ASYNCPG_ENGINE = "tortoise.backends.asyncpg"
SQLITE_ENGINE = "tortoise.backends.sqlite"
MIGRATION_LOCK = 0x15_0001  # PostgreSQL advisory lock key held while migrating


def core_app_config() -> dict[str, Any]:
    return {
        "models": list(CORE_MODELS),
        "default_connection": "default",
        "migrations": CORE_MIGRATIONS,
    }


def tortoise_config(settings: Settings) -> dict[str, Any]:
    """The Tortoise config of the core app on ``settings.database_url``."""
    return {
        "connections": {
            "default": _connection_config(
                settings.database_url, settings.db_timeout, settings.db_pool_size
            )
        },
        "apps": {CORE_APP: core_app_config()},
        "use_tz": True,
        "timezone": "UTC",
    }


def _connection_config(url: str, deadline: float, pool_size: int) -> dict[str, Any]:
    connection = expand_db_url(url)
    if connection["engine"] == ASYNCPG_ENGINE:
        connection["credentials"]["reset"] = _release_without_reset_query
        # Tortoise's default of 5 makes requests beyond the fifth queue for a connection
        # (a wait that costs the event loop more than the query); ?maxsize= in the URL wins.
        connection["credentials"].setdefault("maxsize", pool_size)
    elif connection["engine"] != SQLITE_ENGINE:
        # another driver (psycopg): Tortoise's own client, whose queries have no deadline;
        # its pool still gives up waiting for a connection after the deadline
        connection["credentials"].setdefault("timeout", deadline)
        log.warning(
            "database URL uses the %s client: its queries have no deadline and a hung "
            "server hangs them (ISP_DB_TIMEOUT bounds postgres:// and sqlite:// only)",
            connection["engine"].rsplit(".", 1)[1],
            extra={"engine": connection["engine"]},
        )
        return connection
    connection["engine"] = f"{dbclients.__name__}.{connection['engine'].rsplit('.', 1)[1]}"
    connection["credentials"][dbclients.DEADLINE_KEY] = deadline
    return connection


async def _release_without_reset_query(connection: Any) -> None:
    """asyncpg's pool, by default, sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` each time a connection goes back to it: a second round trip for every
    query. The service leaves no session state behind (no SET, LISTEN or held cursor;
    the migration lock is released in ``finally``), and asyncpg still rolls back an open
    transaction and drops listeners before it calls this, so nothing else is needed."""


async def init_db(settings: Settings) -> None:
    """Open the database for this process.

    ``_enable_global_fallback`` makes the Tortoise context visible to Quart's request
    tasks, which do not inherit the context variable set in ``before_serving``.
    """
    if settings.is_sqlite:
        _ensure_sqlite_dir(settings.database_url)
    # Tortoise caches each table's INSERT/UPDATE SQL under the connection *name*; a
    # process that re-opens "default" on another dialect (tests, tools) would reuse SQL
    # with the wrong placeholders.
    EXECUTOR_CACHE.clear()
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)


async def close_db() -> None:
    await Tortoise.close_connections()


async def migrate(
    apps: dict[str, dict[str, Any]] | None = None,
    targets: list[MigrationTarget] | None = None,
) -> list[str]:
    """Apply pending migrations of ``apps`` (default: the core app); returns what ran.

    Tortoise must be initialised. Runs without re-initialising Tortoise, so it is safe
    while serving (plugins' migrations are applied this way on install). ``targets``
    moves apps to given migrations, backwards too (``__first__``: before the first);
    what was unapplied is returned as ``-app.name``.
    """
    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(f"{app_label}.{name}")
        elif event == "rollback_done":
            applied.append(f"-{app_label}.{name}")

    connection = get_connection("default")
    executor = MigrationExecutor(connection, apps or {CORE_APP: core_app_config()})
    if connection.capabilities.dialect == "postgres":
        # Several instances may start at once: one migrates, the others wait and find
        # nothing left to do. The lock lives on one session, held for the whole run.
        async with connection.acquire_connection() as session:
            await session.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await executor.migrate(targets, progress=progress)
            finally:
                await session.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    else:
        await executor.migrate(targets, progress=progress)
    for name in applied:
        log.info("migration applied", extra={"migration": name})
    return applied


def _ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a file-backed SQLite database (start-up only, before serving)."""
    path = url.split("://", 1)[1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


async def pending_model_changes(
    apps: dict[str, dict[str, Any]] | None = None,
    *,
    name: str | None = None,
    write: bool = False,
    only: str | None = None,
) -> list[str]:
    """Migrations the models need beyond the files on disk; written when ``write``.

    Needs no database: the autodetector compares the models with the state the
    migration files build. An empty list means models and migrations agree.
    """
    apps = apps or {CORE_APP: core_app_config()}
    config = {"connections": {"default": "sqlite://:memory:"}, "apps": apps}
    async with TortoiseContext() as context:
        await context.init(config=config)
        assert context.apps is not None
        writers = await MigrationAutodetector(context.apps, apps).changes()
        found: list[str] = []
        for writer in writers:
            if only is not None and writer.app_label != only:
                continue
            if name:
                writer.name = f"{writer.name.split('_', 1)[0]}_{name}"
            found.append(str(writer.write()) if write else f"{writer.app_label}.{writer.name}")
        return found
