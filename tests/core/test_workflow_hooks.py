"""A failing hook rolls the workflow back: over HTTP, on both databases.

Two plugins hook ``service_provision``: ``writer`` inserts a row through ``db`` and keeps
running; the other refuses, times out or crashes. The answer names plugin and hook, the
service stays ``pending`` and the row ``writer`` wrote is gone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from tests.conftest import Tokens, auth
from tests.core.test_api import create_records
from tests.plugins import builders
from tests.plugins.builders import plugin_files

WRITER = """
import asyncio
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    await db.execute_query(
        "INSERT INTO customer (name, created_at) VALUES ('written-by-hook', CURRENT_TIMESTAMP)"
    )
    await asyncio.sleep(0.4)
"""

FAILURES = {
    "refuses": (
        """
import asyncio
from isp.plugins import registry, PluginError

@registry.hook("service_provision")
async def provision(service, db):
    await asyncio.sleep(0.05)
    raise PluginError("no free port on the access router")
""",
        422,
        "no free port on the access router",
    ),
    "stalls": (
        """
import asyncio
from isp.plugins import registry

@registry.hook("service_provision", timeout=0.1)
async def provision(service, db):
    await asyncio.sleep(30)
""",
        504,
        "did not finish within 0.1 s",
    ),
    "crashes": (
        """
from isp.plugins import registry

@registry.hook("service_provision")
def provision(service, db):
    return 1 / 0
""",
        502,
        "ZeroDivisionError",
    ),
}


def write_plugin(root: Path, name: str, handlers: str) -> None:
    files = plugin_files(
        name, handlers=textwrap.dedent(handlers), hooks=["service_provision"], vendors=["mikrotik"]
    )
    builders.write_plugin(root, name, files)


@pytest.fixture(params=sorted(FAILURES))
def failure(request: pytest.FixtureRequest, settings: Settings) -> tuple[str, int, str]:
    name = request.param
    handlers, status, reason = FAILURES[name]
    write_plugin(settings.plugins_dir, "writer", WRITER)
    write_plugin(settings.plugins_dir, name, handlers)
    return name, status, reason


@pytest.fixture
def failing_app(failure: tuple[str, int, str], app: object) -> object:
    return app


async def test_failing_hook_rolls_back_provisioning_and_names_plugin_and_hook(
    failure: tuple[str, int, str], failing_app: object, client: Client, tokens: Tokens
) -> None:
    plugin, status, reason = failure
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert problem["plugin"] == plugin
    assert (problem["hook"], problem["event"]) == ("handlers.provision", "service_provision")
    assert problem["function"] == "handlers.provision"
    assert reason in problem["detail"]

    service = await client.get(f"/services/{ids['service_id']}", headers=auth(tokens.operator))
    assert (await service.get_json())["status"] == "pending"
    from isp.core.models import Customer

    assert await Customer.filter(name="written-by-hook").count() == 0

    # The server keeps serving: the same route answers again, and other routes work.
    again = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    assert again.status_code == status
    assert (await client.get("/healthz")).status_code == 200


async def test_disabled_plugin_no_longer_blocks_the_workflow(
    failure: tuple[str, int, str], failing_app: object, client: Client, tokens: Tokens
) -> None:
    plugin, _, _ = failure
    disabled = await client.put(f"/plugins/{plugin}/disable", headers=auth(tokens.admin))
    assert disabled.status_code == 200
    assert (await disabled.get_json())["enabled"] is False
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    assert response.status_code == 200
    from isp.core.models import Customer

    # With the failing plugin out of the way, what writer wrote commits with the workflow.
    assert await Customer.filter(name="written-by-hook").count() == 1
