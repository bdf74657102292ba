"""An aborted workflow compensates the hooks that acted: over HTTP, on both databases.

Plugin ``acts`` (critical) provisions: its hook writes a row through the transaction
and its compensation writes a row through the connection it receives (the plain one,
so that row stays). Another plugin then refuses, times out, or makes the commit fail.
The answer is that plugin's failure; the hook's row is rolled back; the compensation's
row shows it ran exactly once.
"""

from __future__ import annotations

import textwrap

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from isp.core.models import Customer
from tests.conftest import Tokens, auth
from tests.core.test_api import create_records
from tests.plugins import builders
from tests.plugins.builders import plugin_files

MARK = """
async def mark(db, name):
    await db.execute_query(
        "INSERT INTO customer (name, created_at) VALUES ($1, CURRENT_TIMESTAMP)"
        if db.capabilities.dialect == "postgres"
        else "INSERT INTO customer (name, created_at) VALUES (?, CURRENT_TIMESTAMP)",
        [name],
    )
"""

ACTS = (
    MARK
    + """
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    await mark(db, f"provisioned-{service.id}")

@provision.compensate
async def unprovision(service, db):
    await mark(db, f"undone-{service.id}")
"""
)

ACTS_UNDO_FAILS = (
    MARK
    + """
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    return None

@provision.compensate
async def unprovision(service, db):
    tried = await db.execute_query_dict("SELECT id FROM customer WHERE name = 'undo-tried'")
    if not tried:  # the first attempt fails; the retry through the outbox succeeds
        await mark(db, "undo-tried")
        raise RuntimeError("router 192.0.2.1 unreachable")
    await mark(db, f"undone-on-retry-{service.id}")
"""
)

REFUSES = (
    MARK
    + """
import asyncio
from isp.plugins import registry, PluginError

@registry.hook("service_provision")
async def provision(service, db):
    await asyncio.sleep(0.05)
    raise PluginError("no free port on the access router")

@provision.compensate
async def unprovision(service, db):
    await mark(db, "undone-by-the-refusing-hook")
"""
)

STALLS = (
    MARK
    + """
import asyncio
from isp.plugins import registry

@registry.hook("service_provision", timeout=0.2)
async def provision(service, db):
    await asyncio.sleep(30)

@provision.compensate
async def unprovision(service, db):
    await mark(db, f"stall-undone-{service.id}")
"""
)

# A row that breaks a deferred constraint: every statement succeeds, COMMIT fails.
UNSOUND = """
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    await db.execute_query(
        "CREATE TEMPORARY TABLE unsound (id INTEGER PRIMARY KEY, "
        "parent INTEGER REFERENCES unsound (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    await db.execute_query("INSERT INTO unsound (id, parent) VALUES (1, 2)")
"""


def install(settings: Settings, **plugins: str) -> None:
    for name, handlers in plugins.items():
        files = plugin_files(name, handlers=textwrap.dedent(handlers), hooks=["service_provision"])
        builders.write_plugin(settings.plugins_dir, name, files)


async def provision(client: Client, tokens: Tokens) -> tuple[int, int, dict[str, object]]:
    ids = await create_records(client, tokens.operator)
    service_id = ids["service_id"]
    response = await client.post(f"/services/{service_id}/provision", headers=auth(tokens.operator))
    assert response.mimetype == "application/problem+json"
    problem: dict[str, object] = await response.get_json()
    service = await client.get(f"/services/{service_id}", headers=auth(tokens.operator))
    assert (await service.get_json())["status"] == "pending"  # nothing committed
    return service_id, response.status_code, problem


async def marks(name: str) -> int:
    return await Customer.filter(name=name).count()


@pytest.fixture
def installed(request: pytest.FixtureRequest, settings: Settings) -> None:
    """The plugins a test names (``parametrize("installed", [...], indirect=True)``)."""
    install(settings, **request.param)


@pytest.fixture
def app(installed: None, app: Quart) -> Quart:
    """The app, started after the test's plugins were written (it loads them on start)."""
    return app


def plugins(**handlers: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("installed", [handlers], indirect=True, ids=[""])


@plugins(acts=ACTS, refuses=REFUSES)
async def test_a_refusal_compensates_the_hook_that_acted_once(
    client: Client, tokens: Tokens
) -> None:
    service_id, status, problem = await provision(client, tokens)

    assert status == 422
    assert problem["plugin"] == "refuses"
    assert "no free port on the access router" in str(problem["detail"])
    assert "compensation_failures" not in problem
    assert await marks(f"provisioned-{service_id}") == 0  # the hook's row rolled back
    assert await marks(f"undone-{service_id}") == 1  # its compensation ran, once
    assert await marks("undone-by-the-refusing-hook") == 0  # a refusal is not undone
    metrics = await client.get("/metrics", headers=auth(tokens.reader))
    text = await metrics.get_data(as_text=True)
    calls = 'isp_compensation_calls_total{event="service_provision",hook="handlers.provision",'
    assert calls + 'outcome="ok",plugin="acts"} 1.0' in text
    assert calls + 'outcome="ok",plugin="refuses"} 0.0' in text


@plugins(acts=ACTS_UNDO_FAILS, refuses=REFUSES)
async def test_a_compensation_that_fails_is_listed_and_the_answer_stays_the_refusal(
    client: Client, tokens: Tokens
) -> None:
    service_id, status, problem = await provision(client, tokens)

    assert status == 422
    assert problem["plugin"] == "refuses"
    assert "no free port on the access router" in str(problem["detail"])
    failures = problem["compensation_failures"]
    assert isinstance(failures, list)
    assert len(failures) == 1
    assert failures[0]["plugin"] == "acts"
    assert failures[0]["hook"] == "handlers.provision"
    assert failures[0]["compensation"] == "handlers.unprovision"
    assert "RuntimeError: router 192.0.2.1 unreachable" in failures[0]["reason"]

    async def retried() -> bool:
        return await marks(f"undone-on-retry-{service_id}") == 1

    await builders.eventually(retried, within=10)  # the outbox ran it again, once


@plugins(acts=ACTS, unsound=UNSOUND)
async def test_a_failed_commit_compensates_every_hook_that_acted(
    client: Client, tokens: Tokens
) -> None:

    service_id, status, problem = await provision(client, tokens)

    assert status == 503, problem
    assert problem["title"] == "Commit failed"
    assert "nothing was changed" in str(problem["detail"])
    assert await marks(f"provisioned-{service_id}") == 0
    assert await marks(f"undone-{service_id}") == 1


@plugins(acts=ACTS, stalls=STALLS)
async def test_a_hook_that_timed_out_after_it_started_is_compensated(
    client: Client, tokens: Tokens
) -> None:

    service_id, status, problem = await provision(client, tokens)

    assert status == 504
    assert problem["plugin"] == "stalls"
    assert await marks(f"stall-undone-{service_id}") == 1
    assert await marks(f"undone-{service_id}") == 1


@plugins(acts=ACTS)
async def test_a_workflow_that_commits_runs_no_compensation(client: Client, tokens: Tokens) -> None:
    ids = await create_records(client, tokens.operator)
    service_id = ids["service_id"]

    response = await client.post(f"/services/{service_id}/provision", headers=auth(tokens.operator))

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert await marks(f"provisioned-{service_id}") == 1
    assert await marks(f"undone-{service_id}") == 0
