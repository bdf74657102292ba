"""Migrations: from zero on both databases, the same schema, and in step with the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.connection import get_connection

from isp import db
from isp.config import Settings

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


async def _columns(dialect: str) -> dict[str, set[str]]:
    conn = get_connection("default")
    if dialect == "sqlite":
        _, tables = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
        found: dict[str, set[str]] = {}
        for row in tables:
            _, cols = await conn.execute_query(f'PRAGMA table_info("{row["name"]}")')
            found[row["name"]] = {c["name"] for c in cols}
        return found
    _, rows = await conn.execute_query(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )
    result: dict[str, set[str]] = {}
    for row in rows:
        result.setdefault(row["table_name"], set()).add(row["column_name"])
    return result


def _model_columns() -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {}
    for model in Tortoise.apps["core"].values():
        meta: Any = model._meta
        expected[meta.db_table] = set(meta.fields_db_projection.values())
        for field in meta.m2m_fields:
            through = meta.fields_map[field]
            expected[through.through] = {through.backward_key, through.forward_key}
    return expected


async def test_migrations_from_zero_build_every_model_table(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    await db.init_db(settings)
    try:
        applied = await db.migrate()
        on_disk = sorted(p.stem for p in MIGRATIONS.glob("[0-9]*.py"))
        assert applied == [f"core.{name}" for name in on_disk]
        assert await db.migrate() == []  # a second run finds nothing to do
        dialect = get_connection("default").capabilities.dialect
        columns = await _columns(dialect)
        for table, expected in _model_columns().items():
            assert table in columns, f"{table} missing on {dialect}"
            assert columns[table] == expected, f"{table} differs on {dialect}"
    finally:
        await db.close_db()


async def test_models_and_migrations_agree() -> None:
    """Fails when a model changed without a migration: run 'isp makemigrations'."""
    assert await db.pending_model_changes() == []


async def test_model_drift_is_detected(tmp_path: Any) -> None:
    """The check above can fail: a model without any migration is reported."""
    apps = {
        "drift": {
            "models": ["tests.fixtures.drift_models"],
            "default_connection": "default",
            "migrations": "tests.fixtures.drift_migrations",
        }
    }
    assert await db.pending_model_changes(apps) == ["drift.0001_initial"]
