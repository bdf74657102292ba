"""PluginRegistry: event catalogue, registration checks, atomic table swaps."""

from __future__ import annotations

import asyncio

import pytest

from isp.plugins.registry import PluginRegistry


def test_declare_events_is_idempotent_and_cumulative() -> None:
    registry = PluginRegistry()
    registry.declare_events({"customer_created"})
    registry.declare_events({"customer_created", "service_provision"})
    assert registry.events == {"customer_created", "service_provision"}


def test_event_names_are_validated() -> None:
    with pytest.raises(ValueError, match="not an event name"):
        PluginRegistry().declare_events({"Customer Created"})


def test_hook_for_an_unknown_event_is_refused_when_registered(
    plugin_registry: PluginRegistry,
) -> None:
    with pytest.raises(ValueError, match="unknown event"):

        @plugin_registry.hook("customer_deleted")
        async def hook(customer: object, db: object = None) -> None:
            return None


def test_generators_and_bad_timeouts_are_refused(plugin_registry: PluginRegistry) -> None:
    with pytest.raises(TypeError, match="generator"):

        @plugin_registry.hook("customer_created")
        async def agen(customer: object, db: object = None):  # type: ignore[no-untyped-def]
            yield customer

    with pytest.raises(ValueError, match="timeout"):
        plugin_registry.hook("customer_created", timeout=0)


async def test_two_handlers_of_one_plugin_for_one_event_both_run(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook("customer_created")
    async def first(customer: object, db: object = None) -> str:
        return "first"

    @plugin_registry.hook("customer_created")
    def second(customer: object) -> str:  # takes fewer arguments than offered
        return "second"

    results = await plugin_registry.emit("customer_created", "ada", db=None)
    assert sorted(r.value for r in results) == ["first", "second"]


def test_hook_asking_for_an_argument_its_event_does_not_pass_is_refused(
    plugin_registry: PluginRegistry,
) -> None:
    with pytest.raises(ValueError, match="takes argument 'changes', which customer_created"):

        @plugin_registry.hook("customer_created")
        async def wrong(customer: object, changes: object, db: object) -> None:
            return None


def test_decorator_returns_the_function_unchanged(plugin_registry: PluginRegistry) -> None:
    def hook(customer: object, db: object = None) -> str:
        return "called"

    assert plugin_registry.hook("customer_created")(hook) is hook


async def test_in_flight_emit_finishes_on_the_table_it_started_with(
    plugin_registry: PluginRegistry,
) -> None:
    release = asyncio.Event()

    @plugin_registry.hook("customer_created", plugin="old")
    async def old(customer: object, db: object = None) -> str:
        await release.wait()
        return "old"

    @plugin_registry.hook("customer_created", plugin="other")
    async def other(customer: object, db: object = None) -> str:
        return "other"

    in_flight = asyncio.create_task(plugin_registry.emit("customer_created", "c"))
    await asyncio.sleep(0.01)
    plugin_registry.withdraw("old")
    plugin_registry.set_enabled("other", False)
    release.set()

    assert [r.value for r in await in_flight] == ["old", "other"]
    assert await plugin_registry.emit("customer_created", "c") == []


def test_disabled_plugin_hooks_leave_the_dispatch_table(plugin_registry: PluginRegistry) -> None:
    @plugin_registry.hook("customer_created", plugin="a")
    def hook(customer: object, db: object = None) -> None:
        return None

    plugin_registry.set_enabled("a", False)
    assert plugin_registry.hooks_for("customer_created") == ()
    assert not plugin_registry.is_enabled("a")
    assert len(plugin_registry.entries("a")) == 1
    plugin_registry.set_enabled("a", True)
    assert [e.plugin for e in plugin_registry.hooks_for("customer_created")] == ["a"]


def test_hooks_run_in_plugin_name_order(plugin_registry: PluginRegistry) -> None:
    for name in ("zeta", "alpha", "mid"):
        plugin_registry.hook("customer_created", plugin=name)(lambda customer, db=None: None)
    assert [e.plugin for e in plugin_registry.hooks_for("customer_created")] == [
        "alpha", "mid", "zeta"
    ]
