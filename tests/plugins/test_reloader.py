"""Hot reload with a real ``awatch`` on a temporary plugins folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from isp.config import Settings
from isp.plugins.hooks import NAMESPACE
from isp.plugins.registry import PluginRegistry
from isp.plugins.reloader import PluginReloader, plugins_touched
from isp.plugins.runtime import PluginRuntime
from tests.plugins import builders
from tests.plugins.builders import eventually

HANDLERS = """
import asyncio
from isp.plugins import registry

VALUE = {value!r}

@registry.hook("customer_created")
async def answer(customer, db=None):
    await asyncio.sleep({delay})
    return VALUE
"""


def write_plugin(
    root: Path, name: str = "echo", value: str = "v1", version: str = "1.0.0",
    delay: float = 0, timeout: float | None = None,
) -> None:  # fmt: skip
    hook: Any = {"name": "customer_created", "timeout": timeout} if timeout else "customer_created"
    handlers = HANDLERS.format(value=value, delay=delay)
    builders.write_plugin(
        root,
        name,
        builders.plugin_files(name, version, handlers=handlers, hooks=[hook], description="echo"),
    )


def write_handlers(folder: Path, value: str, delay: float = 0, source: str | None = None) -> None:
    handlers = source or HANDLERS.format(value=value, delay=delay)
    builders.write_plugin(folder.parent, folder.name, {"handlers.py": handlers})


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    builders.write_plugin(folder.parent, folder.name, {"manifest.json": json.dumps(manifest)})


class Harness:
    def __init__(self, runtime: PluginRuntime, reloader: PluginReloader, root: Path,
                 registry: PluginRegistry) -> None:  # fmt: skip
        self.runtime, self.reloader, self.root, self.registry = runtime, reloader, root, registry

    async def value(self) -> list[Any]:
        return [r.value for r in await self.registry.emit("customer_created", "c", db=None)]

    async def value_becomes(self, expected: list[Any]) -> None:
        async def check() -> bool:
            return await self.value() == expected

        await eventually(check)

    def plugin(self, name: str = "echo") -> dict[str, Any]:
        return self.runtime.describe(name)


@pytest.fixture
async def harness(
    migrated_sqlite: Settings, app_registry: PluginRegistry
) -> AsyncIterator[Harness]:
    write_plugin(migrated_sqlite.plugins_dir)
    runtime = PluginRuntime(migrated_sqlite, app_registry)
    await runtime.start()
    reloader = PluginReloader(runtime, migrated_sqlite.plugins_dir)
    await reloader.start()
    try:
        yield Harness(runtime, reloader, migrated_sqlite.plugins_dir, app_registry)
    finally:
        await reloader.stop()
        await runtime.stop()


async def test_edit_of_a_handler_is_served_without_restart(harness: Harness) -> None:
    assert await harness.value() == ["v1"]
    write_handlers(harness.root / "echo", "v2")
    await harness.value_becomes(["v2"])
    assert harness.plugin()["status"] == "active"


async def test_new_folder_is_discovered_and_loaded(harness: Harness) -> None:
    write_plugin(harness.root, name="second", value="s1")
    await harness.value_becomes(["v1", "s1"])
    assert harness.plugin("second")["status"] == "active"


async def test_deleted_folder_is_unloaded(harness: Harness) -> None:
    shutil.rmtree(harness.root / "echo")
    await harness.value_becomes([])
    assert not harness.runtime.knows("echo")
    assert not any(m.startswith("isp_plugins.echo") for m in __import__("sys").modules)


async def test_manifest_change_takes_effect(harness: Harness) -> None:
    write_manifest(harness.root / "echo", {
        "name": "echo", "version": "1.1.0", "description": "echo",
        "hooks": [{"name": "customer_created", "timeout": 0.5}],
    })  # fmt: skip
    await eventually(lambda: harness.plugin()["version"] == "1.1.0")
    assert harness.plugin()["stats"][0]["timeout"] == 0.5


async def test_burst_of_saves_gives_one_reload(harness: Harness) -> None:
    folder = harness.root / "echo"
    before = harness.reloader.reloads
    for i in range(5):  # an editor: temp file, rename over, bytecode noise
        temp = folder / f".handlers.py.{i}.tmp"
        temp.write_text(HANDLERS.format(value=f"burst{i}", delay=0))
        os.replace(temp, folder / "handlers.py")
        (folder / "__pycache__").mkdir(exist_ok=True)
        (folder / "__pycache__" / "handlers.cpython-311.pyc").write_bytes(b"noise")
        await asyncio.sleep(0.005)
    await harness.value_becomes(["burst4"])
    # A sentinel plugin arrives in one rename (staging dot-folders are ignored): the watcher
    # handles batches in order, so a late reload of the burst would come before it or with it.
    staged = builders.write_plugin(harness.root, ".sentinel", builders.plugin_files("sentinel"))
    os.rename(staged, harness.root / "sentinel")
    def sentinel_counted() -> bool:
        return (
            harness.reloader.reloads >= before + 2
            and harness.runtime.knows("sentinel")
            and harness.plugin("sentinel")["status"] == "active"
        )

    await eventually(sentinel_counted)
    assert harness.reloader.reloads == before + 2  # the burst's one reload, the sentinel's


async def test_backup_rename_save_reloads_instead_of_unloading(harness: Harness) -> None:
    folder = harness.root / "echo"
    os.replace(folder / "handlers.py", folder / "handlers.py~")
    write_handlers(folder, "after-rename")
    (folder / "handlers.py~").unlink()
    await harness.value_becomes(["after-rename"])
    assert harness.plugin()["status"] == "active"


BROKEN: dict[str, tuple[str, str, str]] = {
    "syntax error": ("handlers.py", "def broken(:\n", "handlers.py:1"),
    "import error": ("handlers.py", "import no_such_module_here\n", "No module named"),
    "invalid manifest": ("manifest.json", '{"name": "echo", "version": "one"', "manifest.json"),
    "undeclared hook": (
        "handlers.py",
        HANDLERS.format(value="x", delay=0)
        + "\n@registry.hook('service_provision')\nasync def extra(s, db=None):\n    pass\n",
        "service_provision",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_failing_save_keeps_the_old_version_then_a_fix_recovers(
    harness: Harness, case: str
) -> None:
    folder = harness.root / "echo"
    good_manifest = (folder / "manifest.json").read_text()
    file, content, named = BROKEN[case]
    (folder / file).write_text(content)
    error = await eventually(lambda: harness.plugin()["reload_error"])
    assert named in error
    assert harness.plugin()["status"] == "active"
    assert harness.plugin()["version"] == "1.0.0"
    assert await harness.value() == ["v1"]  # the previous good version keeps serving

    (folder / "manifest.json").write_text(good_manifest)
    write_handlers(folder, "fixed")
    await harness.value_becomes(["fixed"])
    assert harness.plugin()["reload_error"] is None


async def test_disabled_plugin_reloads_but_stays_disabled(harness: Harness) -> None:
    await harness.runtime.set_enabled("echo", False)
    write_manifest(harness.root / "echo", {
        "name": "echo", "version": "1.0.1", "description": "echo", "hooks": ["customer_created"],
    })  # fmt: skip
    await eventually(lambda: harness.plugin()["version"] == "1.0.1")
    assert harness.plugin()["enabled"] is False
    assert harness.plugin()["status"] == "disabled"
    assert await harness.value() == []


SLOW_OLD = """
import asyncio
from isp.plugins import registry

STARTED = asyncio.Event()

@registry.hook("customer_created")
async def answer(customer, db=None):
    STARTED.set()
    await asyncio.sleep(0.6)
    return "slow-old"
"""


async def test_emit_in_flight_during_reload_finishes_on_the_old_code(harness: Harness) -> None:
    write_handlers(harness.root / "echo", "", source=SLOW_OLD)
    await harness.value_becomes(["slow-old"])
    started = sys.modules[f"{NAMESPACE}.echo.handlers"].STARTED
    started.clear()
    in_flight = asyncio.create_task(harness.value())
    await started.wait()  # the old hook is running
    reloads = harness.reloader.reloads
    write_handlers(harness.root / "echo", "new")
    await eventually(lambda: harness.reloader.reloads > reloads)
    assert not in_flight.done()  # the reload happened while it was running
    assert await harness.value() == ["new"]  # the next emit uses the new code
    assert await in_flight == ["slow-old"]


def test_changes_map_to_plugin_folders_and_skip_staging(tmp_path: Path) -> None:
    paths = [
        str(tmp_path / "a" / "handlers.py"),
        str(tmp_path / "a" / "sub" / "x.py"),
        str(tmp_path / ".staging-b-123" / "manifest.json"),
        str(tmp_path / "__pycache__" / "x.pyc"),
        str(tmp_path.parent / "elsewhere.py"),
        str(tmp_path / "c"),
    ]
    assert plugins_touched(tmp_path, paths) == {"a": ["handlers.py", "sub/x.py"], "c": [""]}


async def test_reloader_stops_quickly(
    migrated_sqlite: Settings, app_registry: PluginRegistry
) -> None:
    runtime = PluginRuntime(migrated_sqlite, app_registry)
    await runtime.start()
    reloader = PluginReloader(runtime, migrated_sqlite.plugins_dir)
    await reloader.start()
    started = asyncio.get_running_loop().time()
    await reloader.stop()
    assert asyncio.get_running_loop().time() - started < 1.0
    await runtime.stop()
