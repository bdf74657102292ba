"""emit: concurrency, per-hook deadlines, fail-fast with cancellation, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any

import pytest

from isp.errors import HookCrashed, HookTimeout, PluginError, WorkflowAborted
from isp.plugins.registry import PluginRegistry

EVENT = "service_provision"


def hook_name(func: Callable[..., Any]) -> str:
    """What problems, logs and stats call a test registry's hook: its qualified name."""
    return f"{func.__module__}.{func.__qualname__}"


async def test_three_slow_hooks_one_of_them_sync_finish_in_one_sleep(
    plugin_registry: PluginRegistry,
) -> None:
    started: list[float] = []
    ended: list[float] = []

    @plugin_registry.hook(EVENT, plugin="a")
    async def a(service: object, db: object = None) -> str:
        started.append(perf_counter())
        await asyncio.sleep(0.3)
        ended.append(perf_counter())
        return "a"

    @plugin_registry.hook(EVENT, plugin="b")
    async def b(service: object, db: object = None) -> str:
        started.append(perf_counter())
        await asyncio.sleep(0.3)
        ended.append(perf_counter())
        return "b"

    @plugin_registry.hook(EVENT, plugin="c")
    def c(service: object, db: object = None) -> str:
        started.append(perf_counter())
        time.sleep(0.3)  # a sync hook: runs in a worker thread
        ended.append(perf_counter())
        return "c"

    results = await plugin_registry.emit(EVENT, "svc", db=None)

    assert max(started) < min(ended)  # all three were running at once
    assert [(r.plugin, r.hook, r.value) for r in results] == [
        ("a", hook_name(a), "a"), ("b", hook_name(b), "b"), ("c", hook_name(c), "c")
    ]
    assert all(r.duration >= 0.29 and r.error is None for r in results)


async def test_late_hook_is_cancelled_at_its_deadline_with_its_siblings_awaited(
    plugin_registry: PluginRegistry,
) -> None:
    seen: dict[str, float] = {}

    @plugin_registry.hook(EVENT, plugin="late", timeout=0.2)
    async def late(service: object, db: object = None) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen["late_cancelled"] = perf_counter()
            raise

    @plugin_registry.hook(EVENT, plugin="sibling", timeout=5)
    async def sibling(service: object, db: object = None) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen["sibling_cancelled"] = perf_counter()
            await asyncio.sleep(0.1)  # slow clean-up: emit must wait for it
            seen["sibling_finished"] = perf_counter()
            raise

    start = perf_counter()
    with pytest.raises(HookTimeout) as caught:
        await plugin_registry.emit(EVENT, "svc")
    returned = perf_counter()

    # At its own deadline (0.2 s), not the sibling's (5 s); the margin is for a busy machine.
    assert 0.2 <= seen["late_cancelled"] - start < 2
    assert seen["sibling_cancelled"] - seen["late_cancelled"] < 2
    assert seen["sibling_finished"] <= returned  # emit did not return before it finished
    error = caught.value
    assert error.status_code == 504
    assert error.extra["plugin"] == "late"
    assert error.extra["hook"] == hook_name(late)
    assert "did not finish within 0.2 s" in error.extra["detail"]
    problem = error.to_problem()
    assert (problem["status"], problem["plugin"], problem["hook"], problem["event"]) == (
        504, "late", hook_name(late), EVENT
    )
    assert problem["function"] == problem["hook"]  # the field's earlier name, kept


async def test_single_hook_past_its_timeout_raises_hook_timeout(
    plugin_registry: PluginRegistry,
) -> None:
    cancelled = asyncio.Event()

    @plugin_registry.hook(EVENT, timeout=0.1)
    async def slow(service: object, db: object = None) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    start = perf_counter()
    with pytest.raises(HookTimeout):
        await plugin_registry.emit(EVENT, "svc")
    assert perf_counter() - start < 0.15
    assert cancelled.is_set()


async def test_sync_hook_past_its_timeout_is_reported_without_waiting_for_its_thread(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook(EVENT, timeout=0.1)
    def stuck(service: object, db: object = None) -> None:
        time.sleep(0.4)  # a thread cannot be killed; emit stops waiting for it

    start = perf_counter()
    with pytest.raises(HookTimeout):
        await plugin_registry.emit(EVENT, "svc")
    assert perf_counter() - start < 0.3


async def test_plugin_error_keeps_its_status_and_gets_plugin_and_hook(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook(EVENT, plugin="billing")
    async def refuse(service: object, db: object = None) -> None:
        raise PluginError("customer has unpaid invoices", status=409)

    @plugin_registry.hook(EVENT, plugin="other")
    async def fine(service: object, db: object = None) -> None:
        await asyncio.sleep(1)

    with pytest.raises(PluginError) as caught:
        await plugin_registry.emit(EVENT, "svc")
    error = caught.value
    assert type(error) is PluginError
    assert error.status_code == 409
    assert error.extra.items() >= {
        "plugin": "billing",
        "hook": hook_name(refuse),
        "event": EVENT,
        "function": hook_name(refuse),
        "detail": "customer has unpaid invoices",
    }.items()


async def test_plain_plugin_error_is_422(plugin_registry: PluginRegistry) -> None:
    @plugin_registry.hook(EVENT)
    async def refuse(service: object, db: object = None) -> None:
        raise PluginError("no free port")

    with pytest.raises(PluginError) as caught:
        await plugin_registry.emit(EVENT, "svc")
    assert caught.value.status_code == 422
    assert caught.value.to_problem()["plugin"] == "test"


async def test_crash_is_wrapped_in_hook_crashed_and_logged_with_traceback(
    plugin_registry: PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    @plugin_registry.hook(EVENT, plugin="buggy")
    async def crash(service: object, db: object = None) -> None:
        raise KeyError("port")

    @plugin_registry.hook(EVENT, plugin="other")
    async def fine(service: object, db: object = None) -> None:
        return None

    with caplog.at_level(logging.INFO, "isp.plugins.dispatch"), pytest.raises(
        HookCrashed
    ) as caught:
        await plugin_registry.emit(EVENT, "svc")
    error = caught.value
    assert error.status_code == 502
    assert error.extra["plugin"] == "buggy"
    assert "KeyError" in error.detail
    assert isinstance(error.__cause__, KeyError)
    crashed = [r for r in caplog.records if getattr(r, "outcome", None) == "crashed"]
    assert len(crashed) == 1
    assert crashed[0].exc_info is not None


async def test_several_failures_raise_workflow_aborted_listing_each(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook(EVENT, plugin="first")
    async def first(service: object, db: object = None) -> None:
        await asyncio.sleep(0.05)
        raise PluginError("router refused", status=409)

    @plugin_registry.hook(EVENT, plugin="second")
    async def second(service: object, db: object = None) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise PluginError("could not undo the radius entry") from None

    with pytest.raises(WorkflowAborted) as caught:
        await plugin_registry.emit(EVENT, "svc")
    error = caught.value
    assert error.status_code == 409  # the first failure's
    assert error.extra["failures"] == [
        {"plugin": "first", "hook": hook_name(first), "event": EVENT,
         "function": hook_name(first), "status": 409, "detail": "router refused"},
        {"plugin": "second", "hook": hook_name(second), "event": EVENT,
         "function": hook_name(second), "status": 422,
         "detail": "could not undo the radius entry"},
    ]
    assert error.extra["plugin"] == "first"


async def test_non_critical_failure_is_recorded_and_does_not_abort(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook(EVENT, plugin="notify", critical=False)
    async def notify(service: object, db: object = None) -> None:
        raise PluginError("sms gateway down")

    @plugin_registry.hook(EVENT, plugin="router")
    async def router(service: object, db: object = None) -> str:
        return "done"

    results = await plugin_registry.emit(EVENT, "svc")
    by_plugin = {r.plugin: r for r in results}
    assert by_plugin["router"].value == "done"
    assert by_plugin["notify"].error is not None
    assert by_plugin["notify"].error.detail == "sms gateway down"


async def test_emit_cancelled_from_outside_cancels_and_awaits_its_hooks(
    plugin_registry: PluginRegistry,
) -> None:
    finished: list[str] = []
    for name in ("a", "b"):

        @plugin_registry.hook(EVENT, plugin=name)
        async def hook(service: object, db: object = None, name: str = name) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)
                finished.append(name)
                raise

    task = asyncio.create_task(plugin_registry.emit(EVENT, "svc"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(finished) == ["a", "b"]


async def test_hook_using_its_own_asyncio_timeout_times_out_alone(
    plugin_registry: PluginRegistry,
) -> None:
    """A hook's own timeout must cancel the hook, never the emitting task."""
    for name in ("a", "b"):

        @plugin_registry.hook(EVENT, plugin=name)
        async def guarded(service: object, db: object = None) -> str:
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(1)
            except TimeoutError:
                return "gave up"
            return "finished"

    results = await plugin_registry.emit(EVENT, "svc")
    assert [r.value for r in results] == ["gave up", "gave up"]


async def test_hooks_receive_emit_arguments(plugin_registry: PluginRegistry) -> None:
    @plugin_registry.hook(EVENT)
    async def echo(service: object, *, db: object) -> tuple[object, object]:
        return service, db

    results = await plugin_registry.emit(EVENT, "svc", db="conn")
    assert results[0].value == ("svc", "conn")


async def test_sync_hook_returning_a_coroutine_is_a_crash(
    plugin_registry: PluginRegistry,
) -> None:
    async def work() -> None:
        return None

    @plugin_registry.hook(EVENT)
    def wrong(service: object, db: object = None) -> object:
        return work()

    with pytest.raises(HookCrashed, match="declare it 'async def'"):
        await plugin_registry.emit(EVENT, "svc")


async def test_event_without_hooks_returns_nothing(plugin_registry: PluginRegistry) -> None:
    assert await plugin_registry.emit("customer_created", "c") == []


async def test_unknown_event_is_refused(plugin_registry: PluginRegistry) -> None:
    with pytest.raises(ValueError, match="unknown event"):
        await plugin_registry.emit("customer_exploded", "c")


async def test_every_call_is_logged_once_without_its_arguments(
    plugin_registry: PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    @plugin_registry.hook(EVENT, plugin="a")
    async def ok(service: object, db: object = None) -> None:
        return None

    @plugin_registry.hook(EVENT, plugin="b", critical=False)
    async def refused(service: object, db: object = None) -> None:
        raise PluginError("nope")

    with caplog.at_level(logging.INFO, "isp.plugins.dispatch"):
        await plugin_registry.emit(EVENT, "s3cr3t-password", db="s3cr3t-conn")

    records = [r for r in caplog.records if r.name == "isp.plugins.dispatch"]
    assert sorted((r.plugin, r.hook, r.event, r.outcome) for r in records) == [  # type: ignore[attr-defined]
        ("a", hook_name(ok), EVENT, "ok"), ("b", hook_name(refused), EVENT, "refused")
    ]
    assert all(isinstance(r.duration_ms, float) for r in records)  # type: ignore[attr-defined]
    assert "s3cr3t" not in caplog.text
    assert all("s3cr3t" not in repr(vars(r)) for r in records)


async def test_stats_count_calls_failures_timeouts_and_latency(
    plugin_registry: PluginRegistry,
) -> None:
    outcomes = iter(["ok", "refuse", "hang", "ok"])

    @plugin_registry.hook(EVENT, timeout=0.05)
    async def flaky(service: object, db: object = None) -> None:
        outcome = next(outcomes)
        if outcome == "refuse":
            raise PluginError("no")
        if outcome == "hang":
            await asyncio.sleep(1)

    for _ in range(4):
        with contextlib.suppress(PluginError):
            await plugin_registry.emit(EVENT, "svc")
    snapshot = plugin_registry.entries("test")[0].stats.snapshot()
    assert snapshot["calls"] == 4
    assert snapshot["failures"] == 2
    assert snapshot["timeouts"] == 1
    assert snapshot["p50_ms"] is not None
    assert snapshot["p95_ms"] >= 50


async def test_emit_to_hooks_that_never_suspend_does_not_yield_to_the_loop(
    plugin_registry: PluginRegistry,
) -> None:
    """Each hook's task runs its first step at once: an emit whose hooks all return
    without waiting costs no turn of the event loop (what keeps emit near a direct call)."""
    seen: list[asyncio.Task[Any] | None] = []
    for name in ("a", "b"):

        @plugin_registry.hook(EVENT, plugin=name)
        async def quick(service: object, db: object = None) -> str:
            seen.append(asyncio.current_task())
            return "ok"

    loop_turned: list[bool] = []
    asyncio.get_running_loop().call_soon(loop_turned.append, True)
    results = await plugin_registry.emit(EVENT, "svc")
    assert loop_turned == []
    assert [r.value for r in results] == ["ok", "ok"]
    caller = asyncio.current_task()
    assert len(seen) == 2
    assert caller not in seen
    assert seen[0] is not seen[1]
