"""A non-critical hook whose failed statement poisoned the transaction fails the workflow.

On PostgreSQL a failed statement aborts the transaction: COMMIT would silently roll back
while the API said "active". The workflow must notice and answer with an error instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.core.test_api import create_records

HANDLERS = """
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    await db.execute_query("INSERT INTO no_such_table (x) VALUES (1)")
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    folder: Path = settings.plugins_dir / "careless"
    folder.mkdir()
    (folder / "__init__.py").write_text("from isp.plugins import Plugin\n\nplugin = Plugin()\n")
    (folder / "handlers.py").write_text(HANDLERS)
    manifest = {"name": "careless", "version": "1.0.0", "description": "fails softly",
                "hooks": [{"name": "service_provision", "critical": False}]}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return settings


async def test_status_reported_is_the_status_committed(
    app: object, client: Client, tokens: Tokens, database_url: str
) -> None:
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    body = await response.get_json()
    stored = await client.get(f"/services/{ids['service_id']}", headers=auth(tokens.operator))
    status = (await stored.get_json())["status"]
    if response.status_code == 200:
        # SQLite keeps the transaction usable after a failed statement: the non-critical
        # failure is recorded and the workflow commits.
        assert body["status"] == status == "active"
    else:
        assert response.status_code == 502
        assert body["plugin"] == "careless"
        assert (body["hook"], body["event"]) == ("handlers.provision", "service_provision")
        assert "transaction unusable" in body["detail"]
        assert status == "pending"
    if database_url.startswith("postgres"):
        assert response.status_code == 502
