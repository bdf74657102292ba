"""Declaring compensations and running them, on a test registry and through the loader."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from isp.errors import HookTimeout, PluginError, PluginInvalid
from isp.plugins.compensation import compensating
from isp.plugins.registry import PluginRegistry
from isp.testing import load_plugin
from tests.plugins import builders


async def test_a_lone_hook_that_timed_out_is_compensated_with_its_arguments(
    plugin_registry: PluginRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[Any, Any]] = []

    @plugin_registry.hook("service_provision", timeout=0.05)
    async def provision(service: Any, db: Any) -> None:
        await asyncio.sleep(30)

    @provision.compensate
    async def unprovision(service: Any, db: Any) -> None:
        calls.append((service, db))

    caplog.set_level(logging.INFO, "isp.plugins.compensation")
    with pytest.raises(HookTimeout):
        async with compensating(db="plain"):
            await plugin_registry.emit("service_provision", "svc", db="transaction")

    assert calls == [("svc", "plain")]  # the object, and the connection of the scope
    logged = [r for r in caplog.records if r.name == "isp.plugins.compensation"]
    assert [(r.plugin, r.outcome) for r in logged] == [("test", "ok")]
    assert logged[0].duration_ms >= 0


async def test_a_hook_that_refused_is_not_compensated_and_success_runs_nothing(
    plugin_registry: PluginRegistry,
) -> None:
    calls: list[str] = []

    @plugin_registry.hook("service_provision")
    async def provision(service: Any) -> None:
        raise PluginError("refused")

    @provision.compensate
    async def unprovision(service: Any) -> None:
        calls.append(service)

    with pytest.raises(PluginError):
        async with compensating(db=None):
            await plugin_registry.emit("service_provision", "svc", db=None)
    assert calls == []


async def test_a_compensation_is_undone_only_when_the_block_fails(
    plugin_registry: PluginRegistry,
) -> None:
    calls: list[str] = []

    @plugin_registry.hook("customer_created")
    def welcome(customer: Any) -> None:  # a sync hook and a sync compensation
        return None

    @welcome.compensate
    def unwelcome(customer: Any) -> None:
        calls.append(customer)

    async with compensating(db=None):
        await plugin_registry.emit("customer_created", "ada", db=None)
    assert calls == []

    async def workflow_whose_commit_fails() -> None:
        async with compensating(db=None):
            await plugin_registry.emit("customer_created", "bob", db=None)
            raise RuntimeError("commit failed")

    with pytest.raises(RuntimeError, match="commit"):
        await workflow_whose_commit_fails()
    assert calls == ["bob"]
    await plugin_registry.emit("customer_created", "eve", db=None)  # no scope: nothing noted


def test_a_compensation_asking_for_an_argument_the_event_lacks_is_refused(
    plugin_registry: PluginRegistry,
) -> None:
    @plugin_registry.hook("service_provision")
    async def provision(service: Any, db: Any) -> None:
        return None

    with pytest.raises(ValueError, match="'changes'"):

        @provision.compensate
        async def unprovision(service: Any, changes: Any) -> None:
            return None


def test_one_compensation_per_hook(plugin_registry: PluginRegistry) -> None:
    @plugin_registry.hook("service_provision")
    async def provision(service: Any) -> None:
        return None

    @provision.compensate
    async def first(service: Any) -> None:
        return None

    with pytest.raises(TypeError, match="already has a compensation"):

        @provision.compensate
        async def second(service: Any) -> None:
            return None


HANDLERS = """
from isp.plugins import registry

@registry.hook("service_provision")
async def provision(service, db):
    return None

@provision.compensate
async def unprovision(service, {extra}):
    return None
"""


def write(root: Path, extra: str) -> Path:
    files = builders.plugin_files(
        "undoer", handlers=HANDLERS.format(extra=extra), hooks=["service_provision"]
    )
    return builders.write_plugin(root, "undoer", files)


def test_the_loader_publishes_a_compensation_checked_against_its_event(
    plugin_registry: PluginRegistry, tmp_path: Path
) -> None:
    load_plugin(plugin_registry, write(tmp_path, "db"))
    (entry,) = plugin_registry.hooks_for("service_provision")
    assert entry.compensation is not None
    assert entry.compensation.function == "handlers.unprovision"
    manifest = json.loads((tmp_path / "undoer" / "manifest.json").read_text())
    assert manifest["hooks"] == ["service_provision"]  # no manifest entry needed


def test_the_loader_refuses_a_compensation_that_does_not_fit_its_event(
    plugin_registry: PluginRegistry, tmp_path: Path
) -> None:
    with pytest.raises(PluginInvalid, match=r"compensation handlers\.unprovision.*'devices'"):
        load_plugin(plugin_registry, write(tmp_path, "devices"))
