"""``PluginService``: install, upgrade, enable, disable and uninstall, all or nothing.

An upload goes: validate the zip in memory -> stage its files in a dot-folder of
``ISP_PLUGINS_DIR`` -> import and validate the staged code (the serving version keeps
serving) -> store the zip in the object store under ``<name>/<version>/<sha256>.zip``
-> swap the folder in with renames -> load it -> write the record, the audit entry and
bump the plugin generation in one transaction. Any failure undoes what was done, in
reverse: no folder, no record, no object left behind, the old version still serving.

Every change bumps ``PluginGeneration``; other instances poll it (:mod:`sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from packaging.version import Version
from tortoise.transactions import in_transaction

import isp
from isp import audit
from isp.config import Settings
from isp.errors import Conflict, ISPError, NotFound, PluginInvalid, ValidationFailed
from isp.plugins import archive as zips
from isp.plugins import store as files
from isp.plugins import tables
from isp.plugins.dependencies import check_install, check_upgrade
from isp.plugins.manifest import Manifest
from isp.plugins.models import PluginGeneration, PluginRecord
from isp.plugins.runtime import PluginRuntime
from isp.plugins.tables import drop as drop_tables
from isp.plugins.tables import registered_tables
from isp.storage import ObjectStore

log = logging.getLogger("isp.plugins.service")

UPLOAD_DIR_PREFIX = ".upload-"


class PluginService:
    """The plugin administration verbs behind the REST API and ``isp plugins``."""

    def __init__(self, settings: Settings, runtime: PluginRuntime, store: ObjectStore) -> None:
        self._settings = settings
        self._runtime = runtime
        self._store = store
        self._lock = asyncio.Lock()

    @property
    def runtime(self) -> PluginRuntime:
        return self._runtime

    @property
    def store(self) -> ObjectStore:
        return self._store

    @property
    def bucket(self) -> str:
        return self._settings.s3_plugins_bucket

    # -- install / upgrade -------------------------------------------------------------

    async def upload(
        self, data: bytes, actor: str, *, force: bool = False
    ) -> tuple[dict[str, Any], int]:
        """Install or upgrade from a zip; (Plugin JSON, 201 installed | 200 upgraded/same)."""
        archive = await zips.inspect_zip_async(
            data,
            max_size=self._settings.plugin_max_upload,
            validate_manifest=Manifest.model_validate,
        )
        manifest = Manifest.model_validate(archive.manifest)
        name = manifest.name
        if archive.root_prefix and archive.root_prefix != name:
            raise ValidationFailed(
                f"the zip's folder {archive.root_prefix!r} does not match the manifest name "
                f"{name!r}; rename one",
                errors=[{"loc": ["manifest.json", "name"], "msg": "does not match the folder"}],
            )
        incompatible = manifest.isp_incompatibility(isp.__version__)
        if incompatible:
            raise PluginInvalid(
                f"{name}/manifest.json: {incompatible}",
                plugin=name,
                errors=[{"loc": ["manifest.json", "requires_isp"], "msg": incompatible}],
            )
        async with self._lock:
            record = await PluginRecord.get_or_none(name=name)
            installed = record.version if record and record.source != "removed" else None
            if installed is not None:
                assert record is not None
                if Version(manifest.version) == Version(installed):
                    if record.sha256 == archive.sha256:
                        return self._runtime.describe(name), 200
                    raise Conflict(
                        f"{name} {installed} is installed with different content "
                        f"(sha256 {(record.sha256 or 'local files')[:12]}...); "
                        "publish the change under a new version",
                        plugin=name,
                        installed=installed,
                        uploaded=manifest.version,
                    )
                if Version(manifest.version) < Version(installed) and not force:
                    raise Conflict(
                        f"{name} {installed} is installed; {manifest.version} would be a "
                        "downgrade (add ?force=true to downgrade)",
                        plugin=name,
                        installed=installed,
                        uploaded=manifest.version,
                    )
            graph = self._runtime.graph()
            check_install(name, manifest.requires, graph)
            if installed is not None:
                check_upgrade(name, manifest.version, graph)
            action = "install" if installed is None else "upgrade"
            await self._install(data, archive, manifest, record, actor, action, installed)
            return self._runtime.describe(name), 201 if installed is None else 200

    async def _install(
        self,
        data: bytes,
        archive: zips.PluginArchive,
        manifest: Manifest,
        record: PluginRecord | None,
        actor: str,
        action: str,
        installed: str | None,
    ) -> None:
        name, plugins_dir = manifest.name, self._settings.plugins_dir
        key = files.object_key(name, manifest.version, archive.sha256)
        async with self._staged(archive, name) as candidate:
            await self._runtime.validate_candidate(candidate)
            object_existed = await self._store.exists(self.bucket, key)
            if not object_existed:
                await files.upload(
                    self._store, self.bucket, data, name, manifest.version, archive.sha256
                )
            backup: Path | None = None
            promoted = False
            migrations_before = await tables.applied(name)
            try:
                ready = await asyncio.to_thread(_unnest, candidate, plugins_dir, name)
                try:
                    backup = await files.promote_async(ready, plugins_dir, name)
                except BaseException:
                    await asyncio.to_thread(_remove_tree, ready)
                    raise
                promoted = True
                await files.write_marker_async(plugins_dir / name, archive.tree_sha256)
                described = await self._runtime.load_plugin(
                    name, installed=(archive.sha256, archive.tree_sha256)
                )
                _raise_if_not_serving(name, described)
                async with in_transaction() as conn:
                    enabled = record.enabled if record and record.source != "removed" else True
                    await PluginRecord.update_or_create(
                        name=name,
                        defaults={
                            "version": manifest.version,
                            "sha256": archive.sha256,
                            "tree_sha256": archive.tree_sha256,
                            "source": "upload",
                            "enabled": enabled,
                        },
                        using_db=conn,
                    )
                    await audit.record(
                        conn,
                        actor,
                        action,
                        name,
                        from_version=installed,
                        to_version=manifest.version,
                        sha256=archive.sha256,
                    )
                    await PluginGeneration.bump(conn)
            except BaseException:
                if promoted:
                    # the new version's migrations are undone with its own files, before
                    # its folder goes away
                    try:
                        await tables.migrate_back(name, plugins_dir / name, migrations_before)
                    except Exception:  # the original failure is the one to report
                        log.exception("plugin %s: migrations could not be undone", name)
                    await self._restore(name, backup)
                if not object_existed:
                    with contextlib.suppress(ISPError):
                        await self._store.delete(self.bucket, key)
                raise
            await files.discard_async(backup)
        log.info(
            "plugin %s %s: %s -> %s",
            name,
            action,
            installed or "-",
            manifest.version,
            extra={
                "plugin": name,
                "action": action,
                "from_version": installed,
                "to_version": manifest.version,
                "sha256": archive.sha256,
            },
        )

    async def _restore(self, name: str, backup: Path | None) -> None:
        """Put the previous folder back and serve it again (or unload a failed install)."""
        await asyncio.to_thread(_remove_tree, self._settings.plugins_dir / name)
        await files.rollback_async(backup, self._settings.plugins_dir, name)
        if backup is None:
            if self._runtime.knows(name):
                await self._runtime.unload_plugin(name)
        else:
            await self._runtime.load_plugin(name)

    @contextlib.asynccontextmanager
    async def _staged(self, archive: zips.PluginArchive, name: str) -> AsyncIterator[Path]:
        """The archive's files in ``plugins_dir/.upload-*/<name>``, removed afterwards."""
        parent = self._settings.plugins_dir / f"{UPLOAD_DIR_PREFIX}{secrets.token_hex(6)}"
        staged = await files.stage_async(archive, self._settings.plugins_dir, name)
        try:
            await asyncio.to_thread(_nest, staged, parent, name)
        except BaseException:
            await asyncio.to_thread(_remove_tree, staged)
            raise
        try:
            yield parent / name
        finally:
            await asyncio.to_thread(_remove_tree, parent)

    # -- enable / disable / uninstall --------------------------------------------------

    async def set_enabled(
        self, name: str, enabled: bool, actor: str, *, cascade: bool = False
    ) -> dict[str, Any]:
        async with self._lock:
            cascaded = [] if enabled else self._runtime.check_dependants(name, cascade=cascade)
            described = await self._runtime.set_enabled(name, enabled, cascade=cascade)
            for dependant in cascaded:
                async with in_transaction() as conn:
                    await audit.record(
                        conn, actor, "disable", dependant, detail={"cascade_from": name}
                    )
            async with in_transaction() as conn:
                await audit.record(
                    conn,
                    actor,
                    "enable" if enabled else "disable",
                    name,
                    from_version=described.get("version"),
                    to_version=described.get("version"),
                    sha256=described.get("sha256"),
                )
                await PluginGeneration.bump(conn)
            return described

    async def uninstall(
        self, name: str, actor: str, *, purge: bool = False, cascade: bool = False
    ) -> None:
        """Unload and remove the plugin's folder; its data and settings stay unless purge.

        Enabled plugins that depend on it are a 409, unless ``cascade`` disables them.
        """
        async with self._lock:
            record = await PluginRecord.get_or_none(name=name)
            if not self._runtime.knows(name) and (record is None or record.source == "removed"):
                raise NotFound(f"no plugin named {name!r}", plugin=name)
            for dependant in reversed(self._runtime.check_dependants(name, cascade=cascade)):
                await self._runtime.set_enabled(dependant, False)
                async with in_transaction() as conn:
                    await audit.record(
                        conn, actor, "disable", dependant, detail={"cascade_from": name}
                    )
            tables_to_drop = registered_tables(name) if purge else []
            version = record.version if record else self._runtime.version_of(name)
            if self._runtime.knows(name):
                await self._runtime.unload_plugin(name)
            await files.remove_plugin_dir_async(self._settings.plugins_dir, name)
            async with in_transaction() as conn:
                if purge:
                    await PluginRecord.filter(name=name).using_db(conn).delete()
                else:
                    await (
                        PluginRecord.filter(name=name)
                        .using_db(conn)
                        .update(
                            source="removed",
                            version=None,
                            sha256=None,
                            tree_sha256=None,
                            enabled=False,
                        )
                    )
                await audit.record(
                    conn, actor, "uninstall", name, from_version=version, detail={"purge": purge}
                )
                await PluginGeneration.bump(conn)
            if purge:
                await drop_tables(name, tables_to_drop)
                for stored in await self._store.list(self.bucket, f"{name}/"):
                    await self._store.delete(self.bucket, stored.key)
        log.info("plugin %s uninstalled", name, extra={"plugin": name, "purge": purge})


def _raise_if_not_serving(name: str, described: dict[str, Any]) -> None:
    failure = described.get("reload_error") or (
        described.get("error") if described["status"] == "error" else None
    )
    if failure:
        raise PluginInvalid(str(failure), plugin=name)


def _nest(staged: Path, parent: Path, name: str) -> None:
    parent.mkdir()
    staged.rename(parent / name)


def _unnest(candidate: Path, plugins_dir: Path, name: str) -> Path:
    """Move a validated candidate next to its final place (promote renames from there)."""
    ready = plugins_dir / f".ready-{name}-{secrets.token_hex(6)}"
    candidate.rename(ready)
    return ready


def _remove_tree(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
