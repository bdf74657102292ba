"""``PluginService``: install, upgrade, enable, disable and uninstall, all or nothing.

An upload is one pipeline, one step per line of :meth:`PluginService.upload`:

1. inspect: the zip checked in memory, its manifest parsed once (:mod:`archive`);
2. decide: install, upgrade, nothing to do, or a refusal (:meth:`_decide`);
3. stage: the files in one folder, ``ISP_PLUGINS_DIR/.staging-*/<name>``;
4. validate: imported and checked in a throwaway child process under
   ``ISP_PLUGIN_IMPORT_TIMEOUT`` (:mod:`candidate`): nothing of a candidate runs in the
   server before it is accepted;
5. store the zip, journal the intent, promote the folder (two renames), apply its
   migrations, import it once in the server and publish it (:meth:`_switch`);
6. record: record, audit entry and generation in one transaction (:mod:`records`).

A failure at any step undoes the steps before it and raises a typed ``ISPError``; every
attempt, refused ones included, leaves an audit entry with the zip's sha256 and outcome.
A kill in the middle leaves a journal that start-up finishes or undoes (:mod:`recovery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import Version

import isp
from isp.config import Settings
from isp.errors import Conflict, ISPError, NotFound, PluginInvalid
from isp.plugins import archive as zips
from isp.plugins import records, recovery, sandboxed, tables, trust
from isp.plugins import store as files
from isp.plugins.candidate import validate_candidate
from isp.plugins.dependencies import check_install, check_upgrade
from isp.plugins.loader import MODELS
from isp.plugins.manifest import Manifest
from isp.plugins.models import PluginRecord
from isp.plugins.runtime import PluginRuntime
from isp.plugins.tables import drop as drop_tables
from isp.plugins.tables import registered_tables
from isp.storage import ObjectStore

log = logging.getLogger("isp.plugins.service")

REPLACED_DIR = "replaced-plugins"


@dataclass(frozen=True, slots=True)
class Plan:
    """What an accepted upload will do; ``action`` is ``install``, ``upgrade`` or ``none``."""

    archive: zips.PluginArchive
    action: str
    installed: str | None  # the version serving now, if any
    enabled: bool
    replaces_local: bool = False

    @property
    def name(self) -> str:
        return self.archive.manifest.name

    @property
    def version(self) -> str:
        return self.archive.manifest.version


class PluginService:
    """The plugin administration verbs behind the REST API and ``isp plugins``."""

    def __init__(self, settings: Settings, runtime: PluginRuntime, store: ObjectStore) -> None:
        self._settings = settings
        self._runtime = runtime
        self._store = store
        self._lock = runtime.changes

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
        self,
        data: bytes,
        actor: str,
        *,
        force: bool = False,
        replace_local: bool = False,
        grant: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], int]:
        """Install or upgrade from a zip; (Plugin JSON, 201 installed | 200 upgraded/same).

        ``grant``: the manifest ``permissions`` the operator grants (``?grant=``); a
        plugin asking for one not granted is refused (409 naming them)."""
        name: str | None = None
        archive: zips.PluginArchive | None = None
        try:
            archive = await zips.inspect_zip_async(data, max_size=self._settings.plugin_max_upload)
            name, sha256 = archive.manifest.name, archive.sha256
            verdict = await self._admit(archive)
            granted = _granted(archive.manifest, grant)
            isolation = trust.isolation(name, "upload", verdict, self._settings)
            if isolation == "sandbox":
                _sandboxable(archive)
            async with self._lock:
                plan = await self._decide(archive, force=force, replace_local=replace_local)
                if plan.action == "none":
                    await records.attempt(
                        actor, "upload", name, sha256=sha256, outcome="unchanged",
                        from_version=plan.installed, to_version=plan.version,
                    )  # fmt: skip
                    return self._runtime.describe(name), 200
                staged = await files.stage_async(archive, self._settings.plugins_dir, name)
                try:
                    if isolation == "in_process":  # a sandboxed one is checked in its sandbox
                        await self._validate(staged, plan)
                    await self._switch(plan, staged, data, actor, verdict, granted)
                finally:
                    await files.discard_async(staged if staged.exists() else None)
        except ISPError as exc:
            if archive is None:  # refused before it was hashed
                sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            await records.attempt(
                actor, "upload", name, sha256=sha256, outcome="refused",
                reason=exc.detail, status=exc.status_code,
            )  # fmt: skip
            raise
        return self._runtime.describe(plan.name), 201 if plan.installed is None else 200

    async def _admit(self, archive: zips.PluginArchive) -> trust.Verdict:
        """The zip's signature verdict; refused (422) as :func:`trust.admit_upload` says."""
        verdict = await trust.verify_async(
            archive.files, archive.manifest, self._runtime.trusted_keys
        )
        prefix = f"{archive.root_prefix}/" if archive.root_prefix else ""
        trust.admit_upload(verdict, self._settings, archive.manifest.name, prefix)
        return verdict

    async def _decide(
        self, archive: zips.PluginArchive, *, force: bool, replace_local: bool
    ) -> Plan:
        """Install, upgrade, nothing to do, or a refusal (409) before anything is written."""
        manifest = archive.manifest
        name = manifest.name
        incompatible = manifest.isp_incompatibility(isp.__version__)
        if incompatible:
            raise PluginInvalid(
                f"{name}/manifest.json: {incompatible}",
                plugin=name,
                errors=[{"loc": ["manifest.json", "requires_isp"], "msg": incompatible}],
            )
        record = await PluginRecord.get_or_none(name=name)
        present = record is not None and record.source != "removed"
        installed = record.version if record is not None and present else None
        enabled = record.enabled if record is not None and present else True
        local = present and record is not None and record.source == "local"
        if local and await self._same_files_as_local(name, archive):
            return Plan(archive, "none", installed, enabled)
        if installed is not None and record is not None:
            new, old = Version(manifest.version), Version(installed)
            if new == old and record.sha256 == archive.sha256:
                return Plan(archive, "none", installed, enabled)
            if new == old:
                raise Conflict(
                    f"{name} {installed} is installed with different content "
                    f"(sha256 {(record.sha256 or 'local files')[:12]}...); "
                    "publish the change under a new version",
                    plugin=name,
                    installed=installed,
                    uploaded=manifest.version,
                )
            if new < old and not force:
                raise Conflict(
                    f"{name} {installed} is installed; {manifest.version} would be a "
                    "downgrade (add ?force=true to downgrade)",
                    plugin=name,
                    installed=installed,
                    uploaded=manifest.version,
                )
            if local and not replace_local:
                raise Conflict(
                    f"{name} {installed} is a local plugin (its folder was put in "
                    f"ISP_PLUGINS_DIR by hand); add ?replace_local=true to replace it with "
                    f"{manifest.version}: the folder is then moved to "
                    f"ISP_DATA_DIR/{REPLACED_DIR}/, not deleted",
                    plugin=name,
                    installed=installed,
                    uploaded=manifest.version,
                )
        graph = self._runtime.graph()
        check_install(name, manifest.requires, graph)
        if installed is not None:
            check_upgrade(name, manifest.version, graph)
        action = "install" if installed is None else "upgrade"
        return Plan(archive, action, installed, enabled, replaces_local=local)

    async def _same_files_as_local(self, name: str, archive: zips.PluginArchive) -> bool:
        folder = self._settings.plugins_dir / name
        if not await asyncio.to_thread(folder.is_dir):
            return False
        return await zips.tree_digest_async(folder) == archive.tree_sha256

    async def _validate(self, staged: Path, plan: Plan) -> None:
        """The candidate's import and hooks, checked out of the server (``PluginInvalid``)."""
        await validate_candidate(
            staged,
            self._runtime.known_events(plan.archive.manifest),
            limit=self._settings.plugin_import_timeout,
            name=plan.name,
        )

    async def _switch(
        self,
        plan: Plan,
        staged: Path,
        data: bytes,
        actor: str,
        verdict: trust.Verdict,
        granted: tuple[str, ...] = (),
    ) -> None:
        """Store, promote, migrate, import once, publish, record; undone on any failure."""
        name, plugins_dir, archive = plan.name, self._settings.plugins_dir, plan.archive
        key = files.object_key(name, plan.version, archive.sha256)
        object_existed = await self._store.exists(self.bucket, key)
        if not object_existed:
            await files.upload(self._store, self.bucket, data, name, plan.version, archive.sha256)
        backup = files.backup_path(plugins_dir, name)
        migrations_before = await tables.applied(name)
        intent = recovery.Intent(
            name=name, action=plan.action, actor=actor, sha256=archive.sha256,
            tree_sha256=archive.tree_sha256, from_version=plan.installed,
            to_version=plan.version, backup=backup.name, object_key=key,
            object_existed=object_existed, migrations_before=migrations_before,
        )  # fmt: skip
        await recovery.begin(plugins_dir, intent)
        moved: Path | None = None
        promoted = False
        try:
            moved = await files.promote_async(staged, plugins_dir, name, backup)
            promoted = True
            await files.write_marker_async(plugins_dir / name, archive.tree_sha256)
            await self._runtime.install_version(
                name, (archive.sha256, archive.tree_sha256), archive.manifest, verdict, granted
            )
            await records.installed(
                name, version=plan.version, sha256=archive.sha256,
                tree_sha256=archive.tree_sha256, enabled=plan.enabled, actor=actor,
                action=plan.action, from_version=plan.installed, trust=verdict.to_json(),
                granted=granted,
            )  # fmt: skip
        except BaseException:
            if promoted:
                # the new version's migrations are undone with its own files, before
                # its folder goes away
                try:
                    await tables.migrate_back(name, plugins_dir / name, migrations_before)
                except Exception:  # the original failure is the one to report
                    log.exception("plugin %s: migrations could not be undone", name)
                await self._restore(name, moved)
            if not object_existed:
                with contextlib.suppress(ISPError):
                    await self._store.delete(self.bucket, key)
            await recovery.end(plugins_dir, name)
            raise
        if plan.replaces_local and moved is not None:
            await asyncio.to_thread(self._keep_replaced, moved, name, plan.installed)
        else:
            await files.discard_async(moved)
        await recovery.end(plugins_dir, name)
        log.info(
            "plugin %s %s: %s -> %s",
            name,
            plan.action,
            plan.installed or "-",
            plan.version,
            extra={
                "plugin": name,
                "action": plan.action,
                "from_version": plan.installed,
                "to_version": plan.version,
                "sha256": archive.sha256,
            },
        )

    def _keep_replaced(self, folder: Path, name: str, version: str | None) -> Path:
        """A replaced local folder goes aside under ISP_DATA_DIR, never deleted."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._settings.data_dir / REPLACED_DIR / f"{name}-{version or 'unknown'}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, target)
        log.warning(
            "plugin %s: the local folder it replaced was moved to %s",
            name,
            target,
            extra={"plugin": name, "path": str(target)},
        )
        return target

    async def _restore(self, name: str, backup: Path | None) -> None:
        """Put the previous folder back and serve it again (or unload a failed install)."""
        await files.rollback_async(backup, self._settings.plugins_dir, name)
        if backup is None:
            if self._runtime.knows(name):
                await self._runtime.unload_plugin(name)
        else:
            await self._runtime.load_plugin(name)

    # -- enable / disable / uninstall --------------------------------------------------

    async def set_enabled(
        self, name: str, enabled: bool, actor: str, *, cascade: bool = False
    ) -> dict[str, Any]:
        async with self._lock:
            return await self._runtime.set_enabled(name, enabled, cascade=cascade, actor=actor)

    async def uninstall(
        self, name: str, actor: str, *, purge: bool = False, cascade: bool = False
    ) -> None:
        """Unload and remove an uploaded plugin's folder; its data and settings stay unless
        ``purge``. A local plugin's folder is never removed (409 saying how).

        Enabled plugins that depend on it are a 409, unless ``cascade`` disables them.
        """
        async with self._lock:
            record = await PluginRecord.get_or_none(name=name)
            if not self._runtime.knows(name) and (record is None or record.source == "removed"):
                raise NotFound(f"no plugin named {name!r}", plugin=name)
            refuse_local(name, record, self._runtime.origin_of(name))
            await self._runtime.disable_dependants(name, cascade=cascade, actor=actor)
            tables_to_drop = registered_tables(name) if purge else []
            version = record.version if record else self._runtime.version_of(name)
            if self._runtime.knows(name):
                await self._runtime.unload_plugin(name)
            await files.remove_plugin_dir_async(self._settings.plugins_dir, name)
            await records.uninstalled(name, version=version, actor=actor, purge=purge)
            if purge:
                await drop_tables(name, tables_to_drop)
                for stored in await self._store.list(self.bucket, f"{name}/"):
                    await self._store.delete(self.bucket, stored.key)
        log.info("plugin %s uninstalled", name, extra={"plugin": name, "purge": purge})


def refuse_local(name: str, record: PluginRecord | None, origin: str | None) -> None:
    """A local plugin is the operator's folder: uninstalling it is theirs to do."""
    if (record.source if record is not None else origin) == "local":
        raise Conflict(
            f"{name} is a local plugin (a folder put in ISP_PLUGINS_DIR by hand, not "
            f"uploaded), so it is not removed here: delete or move the folder "
            f"ISP_PLUGINS_DIR/{name} yourself (the service unloads it), or disable it with "
            f"PUT /plugins/{name}/disable",
            plugin=name,
            source="local",
        )


def _granted(manifest: Manifest, grant: frozenset[str]) -> tuple[str, ...]:
    """The permissions the manifest asks for, all granted; else 409 naming the missing."""
    asked = manifest.permissions.asked()
    missing = [name for name in asked if name not in grant]
    if missing:
        names = ", ".join(missing)
        raise Conflict(
            f"{manifest.name} asks for permission{'s' if len(missing) > 1 else ''} {names} "
            f"(manifest.json \"permissions\"); grant {'them' if len(missing) > 1 else 'it'} "
            f"with ?grant={','.join(asked)}",
            plugin=manifest.name,
            permissions=missing,
        )
    return asked


def _sandboxable(archive: zips.PluginArchive) -> None:
    """Refuse (422) before anything is written a plugin that cannot run in the sandbox."""
    prefix = f"{archive.root_prefix}/" if archive.root_prefix else ""
    if any(path == f"{MODELS}.py" or path.startswith(f"{MODELS}/") for path in archive.files):
        name = archive.manifest.name
        raise PluginInvalid(
            f"{name}: {sandboxed.CANNOT_SANDBOX}",
            plugin=name,
            isolation="sandbox",
            errors=[{"loc": ["file", f"{prefix}{MODELS}.py"], "msg": "cannot be sandboxed"}],
        )
