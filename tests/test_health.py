"""/readyz answers 503 problem+json when the database or the object store is down."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import pytest
from moto.server import ThreadedMotoServer

from isp.app import create_app
from isp.config import Settings
from tests.conftest import make_settings, s3_settings


async def test_readyz_is_503_when_the_object_store_goes_down(
    database_url: str, tmp_path: Path
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    app = create_app(make_settings(database_url, tmp_path, **s3_settings(f"http://{host}:{port}")))
    try:
        async with app.test_app():
            client = app.test_client()
            assert (await client.get("/readyz")).status_code == 200
            server.stop()
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.mimetype == "application/problem+json"
            problem = await response.get_json()
            assert problem["check"] == "object_store"
            assert (await client.get("/healthz")).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_readyz_is_503_when_the_database_goes_down(
    settings: Settings, database_url: str, pg_url: str
) -> None:
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/readyz")).status_code == 200
        name = database_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            response = await client.get("/readyz")
            assert response.status_code == 503
            problem = await response.get_json()
            assert problem["check"] == "database"
            assert response.mimetype == "application/problem+json"
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
