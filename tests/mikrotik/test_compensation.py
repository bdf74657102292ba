"""A subscriber change another plugin refused is undone on the router, on both databases.

The app loads the MikroTik plugin and ``credit``, which refuses the events a test
names once MikroTik's hook for it has finished (so the router was really changed).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from quart import Quart

from isp.config import Settings
from tests.conftest import Tokens
from tests.mikrotik.loaded import undo
from tests.mikrotik.test_end_to_end import World, make_world
from tests.plugins import builders
from tests.routeros import RouterOSServer, RouterState

CREDIT = """
import asyncio
from isp.plugins import PluginError, registry


async def refuse_after_mikrotik(event):
    mikrotik = next(e for e in registry.hooks_for(event) if e.plugin == "mikrotik")
    for _ in range(1000):  # until MikroTik's hook has finished (bounded)
        if mikrotik.stats.calls:
            break
        await asyncio.sleep(0.01)
    raise PluginError("the credit check refused the customer")
"""

HOOK = """

@registry.hook("{event}")
async def check_{event}(service, db):
    await refuse_after_mikrotik("{event}")
"""


@pytest.fixture
def refused(request: pytest.FixtureRequest, settings: Settings) -> list[str]:
    events: list[str] = request.param
    handlers = CREDIT + "".join(HOOK.format(event=event) for event in events)
    files = builders.plugin_files("credit", handlers=textwrap.dedent(handlers), hooks=events)
    builders.write_plugin(settings.plugins_dir, "credit", files)
    return events


@pytest.fixture
def app(refused: list[str], app: Quart) -> Quart:
    """The app, started after ``credit`` was written."""
    return app


def refusing(*events: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("refused", [list(events)], indirect=True, ids=[""])


@pytest.fixture
async def world(client: Any, tokens: Tokens, router: RouterOSServer) -> World:
    return await make_world(client, tokens, router)


async def refused_move(world: World, action: str, status_before: str) -> None:
    response = await world.move(action)
    problem = await response.get_json()
    assert response.status_code == 422, problem
    assert problem["plugin"] == "credit"
    assert "compensation_failures" not in problem
    assert (await world.service())["status"] == status_before


@refusing("service_provision")
async def test_a_refused_provision_leaves_no_secret(world: World, state: RouterState) -> None:
    await refused_move(world, "provision", "pending")

    assert any(w.startswith('/ppp secret add name="alice"') for w in state.writes)  # acted
    assert state.secret("alice") is None
    assert state.profile("home-50") is not None  # the plan's profile stays


@refusing("service_provision")
async def test_a_refused_provision_over_a_secret_puts_its_values_back(
    world: World, state: RouterState
) -> None:
    state.add_profile("legacy", rate_limit="1M/1M")
    state.add_secret(
        "alice", password="old-pw", profile="legacy", disabled=True, service="pppoe", comment="x"
    )

    await refused_move(world, "provision", "pending")

    secret = state.secret("alice")
    assert secret is not None
    assert (secret.password, secret.profile, secret.disabled) == ("old-pw", "legacy", True)
    assert secret.comment == "x"
    assert [s.name for s in state.secrets] == ["alice"]


@refusing("service_suspend", "service_terminate")
async def test_a_refused_suspend_or_terminate_is_undone(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    state.add_active("alice", "10.0.0.2")

    await refused_move(world, "suspend", "active")
    secret = state.secret("alice")
    assert secret is not None
    assert not secret.disabled  # enabled again; the ended session stays ended
    assert state.active == []

    await refused_move(world, "terminate", "active")
    secret = state.secret("alice")
    assert secret is not None  # added back as it was
    assert (secret.password, secret.profile, secret.disabled) == ("pppoe-pw", "home-50", False)
    assert secret.comment == f"isp:service={world.service_id} customer=Alice Example"


@refusing("service_resume")
async def test_a_refused_resume_disables_the_secret_again(
    world: World, state: RouterState
) -> None:
    assert (await world.move("provision")).status_code == 200
    assert (await world.move("suspend")).status_code == 200

    await refused_move(world, "resume", "suspended")

    secret = state.secret("alice")
    assert secret is not None
    assert secret.disabled


async def test_capture_and_restore_keep_every_character(session: Any, state: RouterState) -> None:
    state.add_profile("legacy plan")
    state.add_secret(
        "bob", password='p"w $[x] \\ é', profile="legacy plan", disabled=True, comment="a b"
    )
    before = await undo.capture(session, "bob")
    assert before is not None
    state.secrets.clear()
    state.add_active("bob", "10.0.0.3")

    await undo.restore(session, "bob", before)
    await undo.restore(session, "bob", before)  # idempotent

    secret = state.secret("bob")
    assert secret is not None
    assert (secret.password, secret.profile, secret.disabled) == (
        'p"w $[x] \\ é',
        "legacy plan",
        True,
    )
    assert secret.comment == "a b"
    assert state.active == []  # a disabled secret's session ends
    assert await undo.capture(session, "nobody") is None
    await undo.restore(session, "carol", None)  # nothing to remove is fine


def test_the_journal_tells_a_hook_that_never_read_from_a_retry_elsewhere() -> None:
    class Service:
        id = 5

    journal = undo.Journal()
    first, reloaded = Service(), Service()
    journal.keep(first, "service_provision", None)  # marked: nothing read yet
    assert journal.take(first, "service_provision") == (True, None)
    assert journal.take(reloaded, "service_provision") == (False, None)  # unknown here

    captured = undo.Captured(7, "alice", None)
    journal.keep_for_retry(5, "service_provision", captured)
    assert journal.take(reloaded, "service_provision") == (False, captured)
    journal.done(5, "service_provision")
    assert journal.take(reloaded, "service_provision") == (False, None)
