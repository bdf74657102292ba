"""A hook that outlives its deadline: abandoned after the grace, its plugin quarantined;
``def`` hooks on their plugin's bounded threads, never on the core's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from time import perf_counter

import pytest

from isp.errors import HookAbandoned, HookTimeout, PluginBusy, PluginQuarantined
from isp.plugins.registry import PluginRegistry

EVENT = "customer_created"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test so blocked ``def`` hooks return and their threads end."""
    event = threading.Event()
    yield event
    event.set()


def stubborn(registry: PluginRegistry, plugin: str, seconds: float = 30) -> list[str]:
    """An async hook (timeout 0.3 s) that swallows its cancellation and keeps going."""
    seen: list[str] = []

    @registry.hook(EVENT, plugin=plugin, timeout=0.3)
    async def hold_on(customer: object, db: object = None) -> None:
        seen.append("started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await asyncio.sleep(seconds)  # ignores it
        seen.append("ended")

    return seen


async def test_a_hook_ignoring_cancellation_is_abandoned_after_the_grace(
    plugin_registry: PluginRegistry,
) -> None:
    plugin_registry.configure(default_timeout=5, grace=0.2)
    quarantines: list[tuple[str, str]] = []
    plugin_registry.on_quarantine(lambda name, why: quarantines.append((name, why)))
    seen = stubborn(plugin_registry, "stubborn")

    start = perf_counter()
    with pytest.raises(HookAbandoned) as caught:
        await plugin_registry.emit(EVENT, "customer", db=None)
    elapsed = perf_counter() - start

    assert 0.45 <= elapsed < 1.5  # timeout 0.3 + grace 0.2, not the hook's 30 s
    assert seen == ["started", "cancelled"]
    assert caught.value.status_code == 504
    assert caught.value.plugin == "stubborn"
    assert "ignored its cancellation" in caught.value.extra["quarantined"]
    assert quarantines == [("stubborn", caught.value.extra["quarantined"])]
    assert plugin_registry.quarantined("stubborn") == caught.value.extra["quarantined"]
    assert plugin_registry.watchdog.detached == 1  # still running, tracked


async def test_a_quarantined_plugins_critical_hook_fails_fast_until_released(
    plugin_registry: PluginRegistry,
) -> None:
    plugin_registry.configure(default_timeout=5, grace=0.1)
    seen = stubborn(plugin_registry, "stubborn", seconds=0.5)
    calls: list[str] = []

    @plugin_registry.hook(EVENT, plugin="other")
    async def other(customer: object, db: object = None) -> None:
        calls.append("other")

    with pytest.raises(HookAbandoned):
        await plugin_registry.emit(EVENT, "customer", db=None)
    calls.clear()

    start = perf_counter()
    with pytest.raises(PluginQuarantined) as caught:
        await plugin_registry.emit(EVENT, "customer", db=None)
    assert perf_counter() - start < 0.05
    assert caught.value.status_code == 503
    assert caught.value.plugin == "stubborn"
    assert "PUT /plugins/stubborn/enable" in caught.value.detail
    assert calls == []  # nothing ran: the event failed before any hook was called
    assert seen.count("started") == 1

    plugin_registry.set_quarantine("stubborn", None)
    seen.clear()
    with pytest.raises(HookAbandoned):  # runs again, and is abandoned again
        await plugin_registry.emit(EVENT, "customer", db=None)
    assert seen[0] == "started"


async def test_an_abandoned_non_critical_hook_still_fails_the_event(
    plugin_registry: PluginRegistry,
) -> None:
    """Its connection is discarded, so the workflow could not commit anyway."""
    plugin_registry.configure(default_timeout=5, grace=0.1)

    @plugin_registry.hook(EVENT, plugin="texts", critical=False, timeout=0.2)
    async def text(customer: object, db: object = None) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(5)

    with pytest.raises(HookAbandoned):
        await plugin_registry.emit(EVENT, "customer", db=None)
    assert plugin_registry.quarantined("texts") is not None


async def test_a_quarantined_non_critical_hook_reports_its_failure(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook(EVENT, plugin="texts", critical=False)
    async def text(customer: object, db: object = None) -> None:
        raise AssertionError("a held hook is never called")

    plugin_registry.set_quarantine("texts", "overran")
    results = await plugin_registry.emit(EVENT, "customer", db=None)
    assert [(r.plugin, type(r.error)) for r in results] == [("texts", PluginQuarantined)]


async def test_def_hooks_run_on_their_plugins_threads_not_the_default_executor(
    plugin_registry: PluginRegistry, release: threading.Event
) -> None:
    plugin_registry.configure(default_timeout=0.2, grace=30, threads=2)
    names: list[str] = []

    @plugin_registry.hook(EVENT, plugin="sleepy")
    def sleepy(customer: object, db: object = None) -> None:
        names.append(threading.current_thread().name)
        release.wait(120)

    # the loop's default executor: every one of its threads taken by the core elsewhere
    core = asyncio.get_running_loop()
    with pytest.raises(HookTimeout):
        await plugin_registry.emit(EVENT, "customer", db=None)
    assert names[0].startswith("plugin-sleepy")
    start = perf_counter()
    assert await core.run_in_executor(None, lambda: "free") == "free"
    assert perf_counter() - start < 0.5
    assert plugin_registry.threads_of("sleepy").busy() == 1


async def test_a_plugin_whose_threads_are_all_taken_fails_fast_with_503(
    plugin_registry: PluginRegistry, release: threading.Event
) -> None:
    plugin_registry.configure(default_timeout=0.2, grace=30, threads=2)

    @plugin_registry.hook(EVENT, plugin="sleepy")
    def sleepy(customer: object, db: object = None) -> None:
        release.wait(120)

    outcomes = await asyncio.gather(
        *(plugin_registry.emit(EVENT, "customer", db=None) for _ in range(4)),
        return_exceptions=True,
    )
    kinds = sorted(type(o).__name__ for o in outcomes)
    assert kinds == ["HookTimeout", "HookTimeout", "PluginBusy", "PluginBusy"]
    busy = next(o for o in outcomes if isinstance(o, PluginBusy))
    assert busy.status_code == 503
    assert busy.plugin == "sleepy"
    assert "ISP_PLUGIN_THREADS" in busy.detail
    start = perf_counter()
    with pytest.raises(PluginBusy):
        await plugin_registry.emit(EVENT, "customer", db=None)
    assert perf_counter() - start < 0.05
    release.set()
    threads = plugin_registry.threads_of("sleepy")
    # the plugin's threads give their slots back once the hooks return; nothing on the
    # loop is told, so the condition is polled, bounded
    async with asyncio.timeout(5):
        while threads.busy():  # noqa: ASYNC110 - released in the plugin's threads, no event
            await asyncio.sleep(0.01)


async def test_a_def_hook_still_running_after_the_grace_quarantines_its_plugin(
    plugin_registry: PluginRegistry, release: threading.Event
) -> None:
    plugin_registry.configure(default_timeout=0.2, grace=0.2, threads=4)
    quarantined = asyncio.Event()
    plugin_registry.on_quarantine(lambda name, why: quarantined.set())

    @plugin_registry.hook(EVENT, plugin="sleepy")
    def sleepy(customer: object, db: object = None) -> None:
        release.wait(120)

    with pytest.raises(HookTimeout):
        await plugin_registry.emit(EVENT, "customer", db=None)
    await asyncio.wait_for(quarantined.wait(), 2)
    assert "still running" in (plugin_registry.quarantined("sleepy") or "")


async def test_a_def_hook_that_returns_late_but_within_the_grace_is_not_quarantined(
    plugin_registry: PluginRegistry,
) -> None:
    plugin_registry.configure(default_timeout=0.1, grace=1.0)

    @plugin_registry.hook(EVENT, plugin="slowish")
    def slowish(customer: object, db: object = None) -> None:
        time.sleep(0.3)

    with pytest.raises(HookTimeout):
        await plugin_registry.emit(EVENT, "customer", db=None)
    await asyncio.sleep(1.2)
    assert plugin_registry.quarantined("slowish") is None


async def test_an_abandoned_hooks_transaction_is_rolled_back_and_its_connection_unusable(
    app: object, plugin_registry: PluginRegistry
) -> None:
    from tortoise.transactions import in_transaction

    from isp.core.models import Customer

    plugin_registry.configure(default_timeout=5, grace=0.2)
    late: list[BaseException | None] = []
    ended = asyncio.Event()

    @plugin_registry.hook(EVENT, plugin="stubborn", timeout=0.3)
    async def hold_on(customer: Customer, db: object) -> None:
        await Customer.create(name="early", using_db=db)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.6)  # past the grace, then writes through the old connection
        try:
            await Customer.create(name="late", using_db=db)
            late.append(None)
        except Exception as exc:  # noqa: BLE001 - what the hook would see
            late.append(exc)
        ended.set()

    async def workflow() -> None:
        async with in_transaction() as conn:
            customer = await Customer.create(name="workflow", using_db=conn)
            await plugin_registry.emit(EVENT, customer, db=conn)

    with pytest.raises(HookAbandoned):
        await workflow()
    await asyncio.wait_for(ended.wait(), 5)
    assert late[0] is not None  # the late write failed ...
    assert await Customer.all().count() == 0  # ... and nothing of the workflow is left
    async with in_transaction() as conn:  # the pool (or SQLite's connection) still serves
        await Customer.create(name="next", using_db=conn)
    assert await Customer.filter(name="next").count() == 1
