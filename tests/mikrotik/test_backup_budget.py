"""Every step of a backup fits inside the hook's own timeout (one budget, not constants).

The plugin's manifest gives ``device_backup`` its timeout; here the copy the app loads says
4 s, so a router whose ``.backup`` does not show up (or never finishes writing) must be given
up on, with the export kept and the file removed, before the dispatcher cancels the hook,
although the caps alone (90 s export, 45 s file wait, 20 s per command) add up to more.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from isp.config import Settings
from tests.conftest import Tokens
from tests.mikrotik.test_end_to_end import make_world
from tests.routeros import RouterOSServer, RouterState

HOOK_TIMEOUT = 4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The plugin copy the app loads declares a short device_backup timeout."""
    path = settings.plugins_dir / "mikrotik" / "manifest.json"
    manifest = json.loads(path.read_text())
    for hook in manifest["hooks"]:
        if hook["name"] == "device_backup":
            hook["timeout"] = HOOK_TIMEOUT
    path.write_text(json.dumps(manifest))
    return settings


@pytest.mark.parametrize(
    "knobs", [{"backup_delay": 60.0}, {"backup_write_stalls": True}], ids=["late", "stalled"]
)
async def test_a_backup_that_never_completes_fails_inside_the_hook_timeout(
    client: Any, tokens: Tokens, knobs: dict[str, Any]
) -> None:
    state = RouterState(**knobs)  # the default caps: export 90 s, file wait 45 s
    async with RouterOSServer(state) as router:
        world = await make_world(client, tokens, router)
        response = await world.backup()
        problem = await response.get_json()
    assert problem["type"] != "https://isp-framework.dev/problems/hook-timeout", problem
    assert problem["step"] == "binary"
    assert [b["kind"] for b in problem["stored"]] == ["export"]
    assert [b["kind"] for b in await world.backups()] == ["export"]
    assert state.files == {}


async def test_the_budget_keeps_a_reserve_and_cuts_every_step() -> None:
    from tests.mikrotik.loaded import budget, handlers

    assert handlers.hook_timeout("device_backup") == 120  # from the plugin's manifest
    assert handlers.hook_timeout("service_suspend") == 30
    full = budget.Budget(120)
    assert (full.total, full.cleanup, full.close) == (110, 5, 5)
    assert full.limit(90) == 90
    short = budget.Budget(HOOK_TIMEOUT)
    assert short.total == pytest.approx(3.2)
    assert short.limit(90) <= 3.2
    assert short.limit(0.5) == 0.5
    assert budget.Budget.unbounded().limit(20) == 20
