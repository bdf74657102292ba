"""Shared fixtures: both databases, a running app, tokens for each built-in role.

Every database test runs twice, on SQLite and on PostgreSQL (a throw-away cluster
started once per session, or ``ISP_TEST_POSTGRES_URL``). Each test gets a fresh,
migrated database; nothing leaks between tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.app import create_app
from isp.config import Settings
from tests.pgcluster import throwaway_postgres

pytest_plugins = ["tests.s3server"]

TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Admin URL of a PostgreSQL server for the session."""
    configured = os.environ.get("ISP_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'isp.sqlite3'}"
        return
    admin_url = request.getfixturevalue("pg_url")
    name = f"isp_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test app: data and plugins under ``tmp_path``, no hot reload.

    Unsigned uploads run in process (``plugin_unsigned="allow"``): most plugin tests are
    about in-process behaviour (hooks that mutate the object, ``db.execute_query``);
    the trust and sandbox tests ask for ``plugin_unsigned="sandbox"``, the product's
    default, explicitly."""
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "plugins_dir": plugins_dir,
        "plugin_reload": False,
        "secret_key": TEST_SECRET_KEY,
        "hook_timeout": 5,
        "plugin_unsigned": "allow",
    }
    return Settings(**{**values, **overrides})


def s3_settings(endpoint: str) -> dict[str, Any]:
    """The ``ISP_S3_*`` settings of a test S3 endpoint (moto)."""
    from tests.s3server import S3_ACCESS_KEY, S3_SECRET_KEY

    return {
        "s3_endpoint_url": endpoint,
        "s3_access_key": S3_ACCESS_KEY,
        "s3_secret_key": S3_SECRET_KEY,
    }


NULL_ROUTER = Path(__file__).resolve().parent / "fixtures" / "plugins" / "null_router"
"""A router plugin stand-in: drives MikroTik devices for every service move, touches none."""


def install_plugin(folder: Path, settings: Settings) -> None:
    """Copy a plugin folder into the app's plugins directory (the app loads it on start)."""
    shutil.copytree(
        folder,
        settings.plugins_dir / folder.name,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    """The app, started (database migrated, plugins loaded) and stopped after the test."""
    application = create_app(settings)
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


@dataclass(frozen=True)
class Tokens:
    admin: str
    operator: str
    reader: str

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def tokens(app: Quart) -> Tokens:
    """Tokens issued the way ``isp token issue`` does, for each built-in role."""
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    await add_user("alice", ["admin"])
    await add_user("olga", ["operator"])
    await add_user("rita", ["operator"])
    return Tokens(
        admin=await issue_token("alice", ["admin"]),
        operator=await issue_token("olga", ["read", "write"]),
        reader=await issue_token("rita", ["read"]),
    )


def auth(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}
