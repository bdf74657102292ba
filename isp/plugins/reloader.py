"""Hot reload: a change under ``plugins/<name>/`` reloads that plugin alone.

A ``watchfiles.awatch`` task started in ``before_serving`` (when ``ISP_PLUGIN_RELOAD`` is
on) and stopped through its stop event in ``after_serving``. Each batch of file changes
is mapped to plugin folders; for each folder the disk decides, not the change type (a
backup-rename save reports ``added`` and ``deleted`` for one path in one batch):

- the folder exists: load or reload it (``PluginRuntime.load_plugin``); a version that
  fails to import or validate leaves the previous one serving, with ``reload_error``;
- the folder is gone: unload the plugin, after a short grace period, because an upgrade
  swaps folders with two renames.

Debounce is tight (``step`` 30 ms: a burst of saves with shorter gaps is one batch, so one
reload) instead of watchfiles' 1.6 s default. ``__pycache__``, bytecode, editor swap and
backup files and dot-folders (install staging) never trigger anything.

``models.py`` reloads like any other module, but the database schema is not touched:
a table change needs a migration and ``isp migrate`` (see the README).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from watchfiles import DefaultFilter, awatch

from isp.plugins.runtime import PluginRuntime

log = logging.getLogger("isp.plugins.reloader")

STEP_MS = 30
DEBOUNCE_MS = 300
MISSING_GRACE = 0.05
SCHEMA_FILES = ("models.py", "migrations")


class PluginFileFilter(DefaultFilter):
    """watchfiles' default ignores plus editor leftovers; dot-folders are ignored later."""

    def __init__(self) -> None:
        super().__init__(
            ignore_entity_patterns=(
                *DefaultFilter.ignore_entity_patterns,
                r"^\.#",  # emacs lock files
                r"^4913$",  # vim's write test file
                r"\.(tmp|bak|orig)$",
            )
        )


def plugins_touched(plugins_dir: Path, paths: Iterable[str]) -> dict[str, list[str]]:
    """Changed paths grouped by plugin folder name (paths relative to that folder)."""
    root = plugins_dir.resolve()
    touched: dict[str, list[str]] = {}
    for raw in paths:
        try:
            parts = Path(raw).resolve().relative_to(root).parts
        except ValueError:
            continue
        if not parts or parts[0].startswith((".", "_")):
            continue
        touched.setdefault(parts[0], []).append("/".join(parts[1:]))
    return touched


class PluginReloader:
    """Watches ``plugins_dir`` and keeps the runtime in step with it."""

    def __init__(self, runtime: PluginRuntime, plugins_dir: Path) -> None:
        self._runtime = runtime
        self._plugins_dir = plugins_dir
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    async def start(self) -> None:
        await asyncio.to_thread(self._plugins_dir.mkdir, parents=True, exist_ok=True)
        self._stop.clear()
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ready), name="plugin-reloader")
        # awatch registers its watches when it first runs; wait for its first (empty)
        # batch so that a file saved right after start() returns is seen.
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({self._task, waiter}, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # the watcher died at start: say why

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except TimeoutError:
                self._task.cancel()
            self._task = None

    async def _watch(self, ready: asyncio.Event) -> None:
        watcher = awatch(
            self._plugins_dir,
            watch_filter=PluginFileFilter(),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self._stop,
            recursive=True,
            yield_on_timeout=True,
            rust_timeout=200,
        )
        log.info("watching plugins", extra={"plugins_dir": str(self._plugins_dir)})
        async for changes in watcher:
            ready.set()
            if not changes:
                continue
            touched = plugins_touched(self._plugins_dir, (path for _, path in changes))
            for name, files in sorted(touched.items()):
                try:
                    await self.apply(name, files)
                except Exception:  # the watcher must survive anything one plugin does
                    log.exception("reload of %s failed", name, extra={"plugin": name})

    async def apply(self, name: str, files: list[str]) -> None:
        """Bring plugin ``name`` in line with its folder on disk."""
        folder = self._plugins_dir / name
        if not await asyncio.to_thread(folder.is_dir):
            await asyncio.sleep(MISSING_GRACE)
            if not await asyncio.to_thread(folder.is_dir):
                if self._runtime.knows(name):
                    await self._runtime.unload_plugin(name)
                    log.info(
                        "plugin %s unloaded: its folder is gone",
                        name,
                        extra={"plugin": name, "outcome": "unloaded"},
                    )
                return
        before = self._runtime.version_of(name)
        started = time.perf_counter()
        described = await self._runtime.load_plugin(name)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.reloads += 1
        if any(f == SCHEMA_FILES[0] or f.startswith(SCHEMA_FILES[1]) for f in files):
            log.warning(
                "plugin %s: models.py or migrations changed; code reloaded, the database "
                "schema is unchanged until `isp migrate`",
                name,
                extra={"plugin": name},
            )
        failed = described.get("reload_error") or described.get("error")
        log.log(
            logging.WARNING if failed else logging.INFO,
            "plugin %s %s %s -> %s in %.1f ms%s",
            name,
            "reload failed" if failed else ("reloaded" if before else "loaded"),
            before or "-",
            described.get("version") if not failed else before or "-",
            elapsed_ms,
            f": {failed}" if failed else "",
            extra={
                "plugin": name,
                "from_version": before,
                "to_version": described.get("version"),
                "duration_ms": round(elapsed_ms, 1),
                "outcome": "failed" if failed else "reloaded",
            },
        )
