"""Every instance converges to the database and the object store.

The database holds what should run (``PluginRecord``: version, checksums, enabled) and
the object store the zips. :meth:`PluginSync.reconcile` makes this instance match:

- an uploaded plugin whose folder is missing (a new instance, a wiped disk) or holds the
  version this instance served before another instance upgraded it: the zip is fetched,
  verified against its SHA256, extracted and loaded;
- an uploaded plugin whose files differ from both (edited by hand): not loaded, status
  ``error`` with ``checksum mismatch``;
- an uninstalled plugin still loaded here: unloaded, its folder removed;
- an enabled flag changed elsewhere: followed.

It runs at start and whenever ``PluginGeneration`` changes, which a poll notices within
``ISP_PLUGIN_SYNC_INTERVAL`` seconds (default 1 s; one indexed single-row read). The
versions to load are loaded together at the end (``PluginRuntime.load_plugins``): side by
side where they do not require each other, each under the import timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from isp.config import Settings
from isp.errors import DatabaseUnavailable, ISPError
from isp.plugins import archive as zips
from isp.plugins import store as files
from isp.plugins.models import PluginGeneration, PluginRecord
from isp.plugins.runtime import PluginRuntime
from isp.storage import ObjectStore

log = logging.getLogger("isp.plugins.sync")


class PluginSync:
    def __init__(self, settings: Settings, runtime: PluginRuntime, store: ObjectStore) -> None:
        self._settings = settings
        self._runtime = runtime
        self._store = store
        self._generation: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = runtime.changes

    async def start(self) -> None:
        """Reconcile once (integrity check, restore missing folders), then poll."""
        self._generation = await current_generation()
        await self.reconcile()
        self._task = asyncio.create_task(self._poll(), name="plugin-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.plugin_sync_interval)
            try:
                generation = await current_generation()
                if generation != self._generation:
                    self._generation = generation
                    await self.reconcile()
            except DatabaseUnavailable:
                continue  # logged once by the database client; retried next interval
            except Exception:  # the poller must outlive a database hiccup
                log.exception("plugin sync failed; retrying")

    async def reconcile(self) -> None:
        async with self._lock:
            records = {r.name: r for r in await PluginRecord.all()}
            to_load: dict[str, tuple[str, str]] = {}
            for record in records.values():
                try:
                    installed = await self._reconcile_one(record)
                except ISPError as exc:
                    self._runtime.mark_broken(record.name, exc.detail)
                else:
                    if installed is not None:
                        to_load[record.name] = installed
            await self._runtime.load_plugins(to_load)
            for record in records.values():
                if record.source != "removed":
                    self._runtime.apply_enabled(record.name, record.enabled)
                    self._runtime.apply_quarantine(record.name, record.quarantined)
            for name in self._runtime.names():
                if name not in records and self._runtime.origin_of(name) == "upload":
                    await self._remove(name)
            await self._runtime.settings_store.refresh_all()  # settings changed on another instance

    async def _reconcile_one(self, record: PluginRecord) -> tuple[str, str] | None:
        """Put the record's files in place; the (zip, tree) digests to load, if any."""
        name = record.name
        if record.source == "removed":
            if self._runtime.knows(name) and self._runtime.origin_of(name) in ("upload", "removed"):
                await self._remove(name)
            return None
        if record.source == "upload" and record.tree_sha256 and record.version and record.sha256:
            folder = self._settings.plugins_dir / name
            actual = await _digest_or_none(folder)
            if actual != record.tree_sha256:
                # behind: the folder holds what this instance extracted or serves, untouched
                extracted = await files.read_marker_async(folder)
                behind = actual is None or actual in (
                    self._runtime.loaded_tree_sha256(name),
                    extracted,
                )
                if not behind:
                    self._runtime.mark_broken(
                        name,
                        f"plugins/{name}: checksum mismatch: the files differ from the uploaded "
                        f"version {record.version}; reinstall the plugin or restore its files",
                    )
                    return None
                await self._fetch(record, folder)
            if self._runtime.loaded_tree_sha256(name) != record.tree_sha256:
                return record.sha256, record.tree_sha256
        return None

    async def _fetch(self, record: PluginRecord, folder: Path) -> None:
        """Download the recorded zip, verify it and put its files in place."""
        assert record.version
        assert record.sha256
        key = files.object_key(record.name, record.version, record.sha256)
        data = await files.download(self._store, self._settings.s3_plugins_bucket, key)
        archive = await zips.inspect_zip_async(
            data, max_size=max(self._settings.plugin_max_upload, len(data))
        )
        if archive.tree_sha256 != record.tree_sha256:
            raise ISPError(f"plugins/{record.name}: the stored zip does not match its record")
        backup = await files.extract_atomically_async(
            archive, self._settings.plugins_dir, record.name
        )
        await files.write_marker_async(
            self._settings.plugins_dir / record.name, archive.tree_sha256
        )
        await files.discard_async(backup)
        log.info(
            "plugin %s %s fetched from the object store",
            record.name,
            record.version,
            extra={"plugin": record.name, "version": record.version, "key": key},
        )

    async def _remove(self, name: str) -> None:
        await self._runtime.unload_plugin(name)
        await files.remove_plugin_dir_async(self._settings.plugins_dir, name)
        log.info("plugin %s removed: uninstalled on another instance", name, extra={"plugin": name})


async def current_generation() -> int:
    row = await PluginGeneration.get_or_none(id=1)
    return row.value if row else 0


async def _digest_or_none(folder: Path) -> str | None:
    if not await asyncio.to_thread(folder.is_dir):
        return None
    return await zips.tree_digest_async(folder)
