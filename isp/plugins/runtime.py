"""``PluginRuntime``: the plugins of one running service, from disk to dispatch table.

It ties the parts together: discovery (find and describe), the loader (import and
validate), the registry (publish, enable, disable) and ``PluginRecord`` (the enabled
flag, shared by every instance and surviving restarts). One plugin failing never stops
the others: it is listed with ``status: "error"`` and the reason. A reload that fails
keeps the previous version serving and records ``reload_error``.

Order of a (re)load: import and validate (worker thread) -> ``on_load`` -> ``on_enable``
when enabled -> publish (one atomic swap) -> the old version's ``on_disable`` and
``on_unload``. Lifecycle callbacks run under ``ISP_HOOK_TIMEOUT``; sync ones in a thread.

Where a plugin runs is :func:`trust.isolation`'s call: ``in_process`` as above, or
``sandbox``: then nothing of it is imported here; :mod:`isp.plugins.sandboxed` starts its
worker and the entries published forward each call to it. A reload starts a new worker;
the old one finishes its calls in flight, then stops (:meth:`PluginRuntime._retire`).

A quarantine (the registry's, when a hook outlived its deadline or a sandboxed plugin's
worker crashed too often) is written to the plugin's record here, so every instance
holds the plugin's hooks, and lasts until an admin enables the plugin again
(:meth:`PluginRuntime.set_enabled`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import inspect
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from isp.config import Settings
from isp.errors import Conflict, ISPError, NotFound, PluginInvalid
from isp.plugins import keys, records, sandboxed, tables, trust
from isp.plugins.archive import tree_digest_async
from isp.plugins.dependencies import Node, dependants, load_waves, unmet
from isp.plugins.discovery import PluginSource, describe, discover_async
from isp.plugins.hooks import NAMESPACE, is_async
from isp.plugins.loader import MODELS, LoadedPlugin, detach, load_within, reinstate
from isp.plugins.manifest import SLUG, Manifest
from isp.plugins.models import PluginRecord
from isp.plugins.registry import PluginRegistry
from isp.plugins.sandbox import SandboxedPlugin
from isp.plugins.settings import SettingsStore
from isp.plugins.state import PluginState

log = logging.getLogger("isp.plugins.runtime")


class PluginRuntime:
    """Start, stop, describe, enable and disable the plugins under ``settings.plugins_dir``."""

    def __init__(
        self,
        settings: Settings,
        registry: PluginRegistry,
        settings_store: SettingsStore | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._settings_store = settings_store if settings_store is not None else SettingsStore()
        self._states: dict[str, PluginState] = {}
        self._trusted: keys.TrustedKeys = {}
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        self._retiring: dict[asyncio.Task[None], SandboxedPlugin] = {}  # old workers' stops
        registry.on_quarantine(self._quarantined)
        self.changes = asyncio.Lock()
        """Held by whatever changes which plugins this instance runs (the admin verbs, the
        sync with other instances), so one never acts on the half-done work of another:
        an upload installs before it records, and the sync must not remove it meanwhile."""
        self._migrating = asyncio.Lock()  # plugins load side by side; migrations one by one

    @property
    def registry(self) -> PluginRegistry:
        return self._registry

    @property
    def trusted_keys(self) -> keys.TrustedKeys:
        """The public keys of ``ISP_PLUGIN_TRUSTED_KEYS``, read when plugins are discovered."""
        return self._trusted

    @property
    def settings_store(self) -> SettingsStore:
        """The settings of the plugins this runtime loads (``plugin.settings`` reads it)."""
        return self._settings_store

    async def start(self) -> None:
        """Discover and load every plugin; Tortoise must be initialised and migrated.

        Plugins that do not require each other import at the same time, each under the
        import timeout, so N plugins that hang cost one timeout, not N; a plugin loads
        after the plugins it requires (``load_waves``).
        """
        await self.discover()
        async with self._lock:
            waves, refused = load_waves({n: s.requires for n, s in self._states.items()})
            for name, why in refused.items():
                self._failed(self._states[name], why)
            for wave in waves:
                states = [self._states[name] for name in wave]
                await asyncio.gather(*(self._load(s, s.source, migrate=True) for s in states))
        active = sum(1 for s in self._states.values() if s.loaded is not None)
        log.info("plugins started: %d loaded, %d failed", active, len(self._states) - active)

    async def discover(self) -> None:
        """Know every plugin folder and its record without running any plugin code (what
        ``isp plugins uninstall`` needs while the service is stopped)."""
        self._registry.configure(
            default_timeout=self._settings.hook_timeout,
            grace=self._settings.hook_grace,
            threads=self._settings.plugin_threads,
        )
        self._trusted = await keys.trusted_keys_async(self._settings)
        sources = await discover_async(self._settings.plugins_dir)
        verdicts = [await self._verify(source) for source in sources]
        async with self._lock:
            known = await records.sync_local(sources)
            for source, verdict in zip(sources, verdicts, strict=True):
                record = known.get(source.name)
                self._states[source.name] = PluginState(
                    name=source.name,
                    source=source,
                    enabled=record.enabled if record else True,
                    origin=record.source if record else "local",
                    sha256=record.sha256 if record else None,
                    tree_sha256=record.tree_sha256 if record else None,
                    trust=verdict,
                    granted=_granted(source, record),
                )
                self.apply_quarantine(source.name, record.quarantined if record else None)

    async def stop(self) -> None:
        """Unload every plugin (``on_disable`` when enabled, then ``on_unload``)."""
        async with self._lock:
            for name in sorted(self._states, reverse=True):
                await self._unload(self._states.pop(name))
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        for task, worker in list(self._retiring.items()):
            task.cancel()  # the old workers are killed now, not after their grace
            await asyncio.gather(task, return_exceptions=True)
            await worker.stop()
        self._registry.close()

    async def load_plugin(
        self,
        name: str,
        *,
        installed: tuple[str, str] | None = None,
        manifest: Manifest | None = None,
        verdict: trust.Verdict | None = None,
        granted: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Load ``plugins_dir/<name>``, or reload it: the new version replaces the old
        only when it is valid; otherwise the old one keeps serving (``reload_error``).

        ``installed`` = (zip sha256, tree sha256) marks an uploaded version: its files are
        checked against the tree digest before every load from now on. ``manifest`` and
        ``verdict``: the manifest and signature verdict already read from its zip (not
        read again from disk). ``granted``: the permissions granted to that version (else
        as its record says).
        """
        source = await self._source(name, manifest)
        async with self._lock:
            return await self._load_one(source, installed, verdict, granted)

    async def load_plugins(self, installed: Mapping[str, tuple[str, str]]) -> None:
        """Load or reload uploaded versions (name -> (zip sha256, tree sha256)) side by
        side, as :meth:`start` does: a plugin after those of the batch it requires."""
        sources = [await self._source(name, None) for name in sorted(installed)]
        by_name = {source.name: source for source in sources}
        async with self._lock:
            requires = {s.name: dict(s.manifest.requires) if s.manifest else {} for s in sources}
            waves, cycle = load_waves(requires)
            for wave in [*waves, *([name] for name in sorted(cycle))]:  # a cycle: unmet
                await asyncio.gather(*(self._load_one(by_name[n], installed[n]) for n in wave))

    async def _source(self, name: str, manifest: Manifest | None) -> PluginSource:
        folder = self._settings.plugins_dir / name
        if manifest is not None:
            return PluginSource(name, folder, f"{folder.parent.name}/{name}", manifest)
        return await asyncio.to_thread(describe, folder)

    async def _load_one(
        self,
        source: PluginSource,
        installed: tuple[str, str] | None,
        verdict: trust.Verdict | None = None,
        granted: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """:meth:`load_plugin`'s work, with the lock held."""
        name = source.name
        state = self._states.get(name)
        if state is None:
            known = await records.sync_local([source])
            record = known.get(name)
            state = PluginState(
                name,
                source,
                enabled=record.enabled if record else True,
                origin=record.source if record else "local",
                sha256=record.sha256 if record else None,
                tree_sha256=record.tree_sha256 if record else None,
                granted=_granted(source, record),
            )
            self._states[name] = state
        state.trust = verdict if verdict is not None else await self._verify(source)
        previous = (state.origin, state.sha256, state.tree_sha256, state.granted)
        first = state.loaded is None
        if installed is not None:
            state.origin, (state.sha256, state.tree_sha256) = "upload", installed
            if granted is None:  # another instance installed it: its record has the grant
                record = await PluginRecord.get_or_none(name=name)
                granted = tuple(record.granted) if record is not None else ()
            state.granted = granted
        elif state.origin == "local":
            state.granted = _granted(source, None)
        await self._load(state, source, migrate=first or installed is not None)
        if installed is not None and (
            state.loaded is None or state.loaded.path != source.path or state.reload_error
        ):
            state.origin, state.sha256, state.tree_sha256, state.granted = previous
        if state.loaded is not None and state.loaded_at and state.source is source:
            await records.sync_local([source])  # the version now serving
        return self._describe(state)

    async def unload_plugin(self, name: str) -> None:
        """Drop a plugin's hooks and code; emits in flight finish on the old code."""
        async with self._lock:
            await self._unload(self._get(name))
            del self._states[name]

    def graph(self) -> dict[str, Node]:
        """What dependency checks see: each plugin's loaded version, flag and requires."""
        return {
            name: Node(
                version=state.loaded.manifest.version if state.loaded else None,
                enabled=state.enabled,
                requires=state.requires,
            )
            for name, state in self._states.items()
        }

    def required_by(self, name: str) -> builtins.list[str]:
        return sorted(n for n, s in self._states.items() if name in s.requires)

    async def set_enabled(
        self, name: str, enabled: bool, *, cascade: bool = False, actor: str | None = None
    ) -> dict[str, Any]:
        """Enable or disable at run time, without unloading code; persisted in the DB.

        Enabling needs every requirement enabled and in range (409 otherwise); disabling
        a plugin that enabled plugins depend on is refused unless ``cascade``, which
        disables those first. Each flag that changes is one transaction (record, audit
        entry for ``actor``, generation).
        """
        self._get(name)
        if enabled:
            problems = unmet(name, self._states[name].requires, self.graph(), enabled=True)
            if problems:
                raise Conflict("; ".join(problems), plugin=name)
        else:
            await self.disable_dependants(name, cascade=cascade, actor=actor)
        return await self._set_enabled(name, enabled, actor)

    async def disable_dependants(self, name: str, *, cascade: bool, actor: str | None) -> None:
        """Disable the enabled plugins that depend on ``name`` (409 unless ``cascade``)."""
        for dependant in reversed(self.check_dependants(name, cascade=cascade)):
            await self._set_enabled(dependant, False, actor, {"cascade_from": name})

    async def install_version(
        self,
        name: str,
        installed: tuple[str, str],
        manifest: Manifest,
        verdict: trust.Verdict | None = None,
        granted: tuple[str, ...] = (),
    ) -> None:
        """Import and publish the version just promoted; ``PluginInvalid`` when it fails."""
        await self.load_plugin(
            name, installed=installed, manifest=manifest, verdict=verdict, granted=granted
        )
        state = self._states[name]
        failure = state.reload_error or (state.error if state.loaded is None else None)
        if failure:
            raise PluginInvalid(failure, plugin=name)

    def check_dependants(self, name: str, *, cascade: bool) -> builtins.list[str]:
        """Enabled plugins that depend on ``name``; refused (409) unless ``cascade``."""
        found = dependants(name, self.graph())
        if found and not cascade:
            raise Conflict(
                f"{', '.join(found)} depend{'s' if len(found) == 1 else ''} on {name}: "
                "disable them first, or add ?cascade=true to disable them too",
                plugin=name,
                dependants=found,
            )
        return found

    async def _set_enabled(
        self, name: str, enabled: bool, actor: str | None, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self._lock:
            state = self._get(name)
            loaded = state.loaded
            if enabled and state.enabled and state.quarantined:
                await self._lift_quarantine(state, actor)
            elif enabled != state.enabled:
                if not SLUG.match(name):
                    why = state.error or f"{name!r} is not a plugin name"
                    raise PluginInvalid(why, plugin=name)
                if enabled and loaded is not None:
                    await self._call(state, loaded, "on_enable")
                manifest = loaded.manifest if loaded else state.source.manifest
                await records.set_enabled(
                    name,
                    enabled,
                    version=manifest.version if manifest else None,
                    actor=actor,
                    sha256=state.sha256,
                    detail=detail,
                )
                state.enabled = enabled
                if loaded is not None:
                    self._registry.set_enabled(name, enabled)
                    if not enabled:
                        await self._call_quietly(state, loaded, "on_disable")
                log.info(
                    "plugin %s %s",
                    name,
                    "enabled" if enabled else "disabled",
                    extra={"plugin": name, "enabled": enabled},
                )
            return self._describe(state)

    async def _lift_quarantine(self, state: PluginState, actor: str | None) -> None:
        """An admin enables a quarantined (still enabled) plugin: its hooks run again."""
        manifest = state.loaded.manifest if state.loaded else state.source.manifest
        reason = state.quarantined
        await records.set_enabled(
            state.name,
            True,
            version=manifest.version if manifest else None,
            actor=actor,
            sha256=state.sha256,
            detail={"quarantine_lifted": reason},
        )
        self.apply_quarantine(state.name, None)
        log.warning(
            "plugin %s taken out of quarantine",
            state.name,
            extra={"plugin": state.name, "reason": reason},
        )

    def _quarantined(self, name: str, reason: str) -> None:
        """The registry quarantined ``name``: show it and record it for every instance."""
        state = self._states.get(name)
        if state is not None:
            state.quarantined = reason
        # A fresh context: the caller's is the workflow's, whose transaction (about to be
        # rolled back) Tortoise would otherwise use for this write.
        task = asyncio.get_running_loop().create_task(
            self._record_quarantine(name, reason), context=contextvars.Context()
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record_quarantine(self, name: str, reason: str) -> None:
        try:
            await records.quarantined(name, reason)
        except Exception:  # the hooks are held here regardless; the log says what is missing
            log.exception(
                "plugin %s: quarantine not recorded; other instances still run its hooks",
                name,
                extra={"plugin": name},
            )

    def apply_quarantine(self, name: str, reason: str | None) -> None:
        """Follow a quarantine read from the database (or lifted): no database write.

        Lifted: a sandboxed plugin's worker is reset (its crash count too) and starts on
        the next call."""
        state = self._states.get(name)
        if state is not None:
            lifted = reason is None and state.quarantined is not None
            state.quarantined = reason
            if lifted and state.worker is not None:
                state.worker.reset()
        self._registry.set_quarantine(name, reason)

    def describe(self, name: str) -> dict[str, Any]:
        """The plugin's JSON with per-hook ``stats`` (calls, failures, timeouts, p50/p95)."""
        return self._describe(self._get(name))

    def known_events(self, manifest: Manifest | None) -> set[str]:
        """Events a plugin with ``manifest`` may hook here (what a candidate is checked with)."""
        known = set(self._registry.events)
        for state in self._states.values():
            if state.source.manifest is not None:
                known |= set(state.source.manifest.events)
        return known | set(manifest.events if manifest else ())

    def apply_enabled(self, name: str, enabled: bool) -> None:
        """Follow an enabled flag another instance persisted (no database write here)."""
        state = self._states.get(name)
        if state is not None and state.enabled != enabled:
            state.enabled = enabled
            if state.loaded is not None:
                self._registry.set_enabled(name, enabled)

    def loaded_tree_sha256(self, name: str) -> str | None:
        """Tree digest of the uploaded version this instance serves, if any."""
        state = self._states.get(name)
        return state.tree_sha256 if state and state.loaded else None

    def origin_of(self, name: str) -> str | None:
        state = self._states.get(name)
        return state.origin if state else None

    def mark_broken(self, name: str, why: str) -> None:
        """Record that a plugin cannot be served (e.g. checksum mismatch) and withdraw it."""
        state = self._states.get(name)
        if state is None:
            return
        if state.loaded is not None:
            self._registry.withdraw(name)
            detach(name)
            state.loaded = None
            self._retire(state)
        state.error = why
        log.error("plugin %s: %s", name, why, extra={"plugin": name})

    def worker(self, name: str) -> SandboxedPlugin | None:
        """The worker of a sandboxed plugin's version serving now, or None."""
        state = self._states.get(name)
        return state.worker if state else None

    def names(self) -> builtins.list[str]:
        return sorted(self._states)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a plugin folder this runtime has seen (loaded or not)."""
        return name in self._states

    def version_of(self, name: str) -> str | None:
        """The version serving now, or None when the plugin is unknown or not loaded."""
        state = self._states.get(name)
        return state.loaded.manifest.version if state and state.loaded else None

    def manifest_version(self, name: str) -> str | None:
        """The version its folder's manifest declares (served or not)."""
        state = self._states.get(name)
        manifest = state.source.manifest if state else None
        return manifest.version if manifest else None

    def list(self) -> builtins.list[dict[str, Any]]:
        return [
            {**self._states[name].to_json(), "required_by": self.required_by(name)}
            for name in sorted(self._states)
        ]

    # -- internals -------------------------------------------------------------------

    def _get(self, name: str) -> PluginState:
        state = self._states.get(name)
        if state is None:
            raise NotFound(f"no plugin named {name!r}", plugin=name)
        return state

    def _describe(self, state: PluginState) -> dict[str, Any]:
        stats = [
            {
                "hook": entry.hook,
                "event": entry.event,
                "function": entry.function,
                "timeout": self._registry.timeout_of(entry),
                "critical": entry.critical,
                "after_commit": entry.after_commit,
                **entry.stats.snapshot(),
            }
            for entry in (state.loaded.entries if state.loaded else ())
        ]
        return {**state.to_json(), "required_by": self.required_by(state.name), "stats": stats}

    async def _verify(self, source: PluginSource) -> trust.Verdict:
        """The signature of a plugin folder (a folder that cannot be read is ``invalid``)."""
        try:
            return await trust.verify_folder_async(source.path, source.manifest, self._trusted)
        except ISPError as exc:
            return trust.Verdict("invalid", detail=exc.detail)

    def _known_events(self, source: PluginSource) -> set[str]:
        """Core events plus every plugin's declared events (load order must not matter)."""
        known = set(self._registry.events)
        for state in self._states.values():
            for manifest in (state.source.manifest, source.manifest):
                if manifest is not None:
                    known |= set(manifest.events)
        return known

    async def _load(
        self, state: PluginState, source: PluginSource, *, migrate: bool = False
    ) -> None:
        """(Re)load ``source``. ``migrate``: apply the plugin's pending migrations first
        (first load in this process, install, upgrade); a hot reload keeps the models."""
        old = state.loaded
        wanted = dict(source.manifest.requires) if source.manifest else {}
        problems = unmet(state.name, wanted, self.graph(), enabled=False)
        if problems:
            self._failed(state, "; ".join(problems))
            return
        if state.origin == "upload" and state.tree_sha256:
            actual = await tree_digest_async(source.path)
            if actual != state.tree_sha256:
                self._failed(
                    state,
                    f"{source.label}: checksum mismatch: the files differ from the uploaded "
                    f"version (expected tree sha256 {state.tree_sha256[:12]}..., found "
                    f"{actual[:12]}...); reinstall the plugin or restore its files",
                )
                return
        isolation = trust.isolation(state.name, state.origin, state.trust, self._settings)
        if isolation == "sandbox":
            await self._load_sandboxed(state, source)
            return
        keep_models = old is not None and not migrate
        try:
            if migrate:
                async with self._migrating:
                    await tables.migrate(state.name, source.path)
            new = await load_within(
                source,
                self._known_events(source),
                self._settings.plugin_import_timeout,
                keep_models=keep_models,
                restore=lambda: state.loaded.modules if state.loaded else {},
                settings=self._settings_store,
            )
            models = new.modules.get(f"{NAMESPACE}.{state.name}.{MODELS}")
            if models is not None and not (
                keep_models
                and old
                and old.modules.get(f"{NAMESPACE}.{state.name}.{MODELS}") is models
            ):
                tables.register(state.name, models)
        except PluginInvalid as exc:
            detach(state.name)
            if old is not None:
                reinstate(old.modules)
            self._failed(state, exc.detail)
            return
        except ISPError as exc:  # a migration that failed
            self._failed(state, f"{source.label}/migrations: {exc.detail}")
            return
        except Exception as exc:  # a loader bug must not take the other plugins down
            log.exception("plugin %s: unexpected loader error", state.name)
            self._failed(state, f"{source.label}: cannot be loaded: {type(exc).__name__}: {exc}")
            return
        await self._settings_store.refresh(state.name)  # on_load already sees stored settings
        try:
            await self._call(state, new, "on_load")
            if state.enabled:
                await self._call(state, new, "on_enable")
        except PluginInvalid as exc:
            await self._call_quietly(state, new, "on_unload")
            detach(state.name)
            if old is not None:
                reinstate(old.modules)
            self._failed(state, exc.detail)
            return
        self._publish(state, new)
        state.source, state.loaded, state.loaded_at = source, new, datetime.now(UTC)
        state.isolation = isolation
        state.error = state.reload_error = None
        retired = state.worker is not None
        log.info(
            "plugin %s %s loaded",
            state.name,
            new.manifest.version,
            extra={"plugin": state.name, "version": new.manifest.version},
        )
        if old is not None:
            if state.enabled:
                await self._call_quietly(state, old, "on_disable")
            await self._call_quietly(state, old, "on_unload")
        if retired:  # it ran in the sandbox until now
            self._retire(state)

    async def _load_sandboxed(self, state: PluginState, source: PluginSource) -> None:
        """(Re)load ``source`` in a sandboxed worker; nothing of it is imported here.

        The new worker serves from the publish on; the old one (a reload) finishes the
        calls in flight, within the hook timeout, then stops."""
        old = state.loaded
        try:
            new, worker = await sandboxed.start(
                source,
                self._known_events(source),
                self._settings,
                self._registry,
                granted=state.granted,
                settings_store=self._settings_store,
            )
        except PluginInvalid as exc:
            if state.loaded is None:  # where it would run, though it cannot
                state.isolation = "sandbox"
            self._failed(state, exc.detail)
            return
        await self._settings_store.refresh(state.name)  # the worker gets the stored values
        try:  # its lifecycle callbacks run in its worker
            await self._call(state, new, "on_load")
            if state.enabled:
                await self._call(state, new, "on_enable")
        except PluginInvalid as exc:
            await self._call_quietly(state, new, "on_unload")
            await worker.stop()
            self._failed(state, exc.detail)
            return
        self._publish(state, new)
        if old is not None:
            if state.enabled:
                await self._call_quietly(state, old, "on_disable")
            await self._call_quietly(state, old, "on_unload")
            if state.isolation == "in_process":  # it ran here until now
                detach(state.name)
                tables.unregister(state.name)
        self._retire(state)
        state.source, state.loaded, state.loaded_at = source, new, datetime.now(UTC)
        state.isolation, state.worker = "sandbox", worker
        state.error = state.reload_error = None
        log.info(
            "plugin %s %s loaded in its sandbox",
            state.name,
            new.manifest.version,
            extra={"plugin": state.name, "version": new.manifest.version, "pid": worker.pid},
        )

    def _retire(self, state: PluginState) -> None:
        """Stop the worker of the version just replaced, once its calls in flight ended."""
        worker, state.worker = state.worker, None
        if worker is None:
            return
        task = asyncio.get_running_loop().create_task(
            worker.stop(grace=self._settings.hook_timeout), context=contextvars.Context()
        )
        self._retiring[task] = worker
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def _publish(self, state: PluginState, new: LoadedPlugin) -> None:
        """Swap ``new``'s hooks into the dispatch table, in process or sandboxed alike."""
        self._registry.publish(
            state.name,
            new.entries,
            enabled=state.enabled,
            events=new.manifest.events,
            vendors=new.manifest.vendors,
        )

    def _failed(self, state: PluginState, why: str) -> None:
        if state.loaded is not None:
            state.reload_error = why
            log.warning(
                "plugin %s reload failed, previous version keeps serving: %s",
                state.name,
                why,
                extra={"plugin": state.name},
            )
        else:
            state.error = why
            log.error("plugin %s failed to load: %s", state.name, why, extra={"plugin": state.name})

    async def _unload(self, state: PluginState) -> None:
        loaded = state.loaded
        if loaded is None:
            return
        self._registry.withdraw(state.name)
        if state.enabled:
            await self._call_quietly(state, loaded, "on_disable")
        await self._call_quietly(state, loaded, "on_unload")
        detach(state.name)
        tables.unregister(state.name)
        self._settings_store.forget(state.name)
        state.loaded = None
        worker, state.worker = state.worker, None
        if worker is not None:
            await worker.stop()

    async def _call(self, state: PluginState, loaded: LoadedPlugin, name: str) -> None:
        """Run a lifecycle callback under the hook timeout; failures become PluginInvalid."""
        callback = loaded.plugin.callback(name)
        if callback is None:
            return
        limit = self._settings.hook_timeout
        try:
            async with asyncio.timeout(limit):
                if is_async(callback):
                    await callback()  # type: ignore[misc]
                else:
                    result = await asyncio.to_thread(callback)
                    if inspect.isawaitable(result):
                        await result
        except TimeoutError as exc:
            why = f"{state.source.label}: {name} did not finish within {limit:g} s"
            raise PluginInvalid(why, plugin=state.name) from exc
        except Exception as exc:
            why = f"{state.source.label}: {name} failed: {type(exc).__name__}: {exc}"
            raise PluginInvalid(why, plugin=state.name) from exc

    async def _call_quietly(self, state: PluginState, loaded: LoadedPlugin, name: str) -> None:
        """Callbacks of a plugin going away cannot veto it: log their failures."""
        try:
            await self._call(state, loaded, name)
        except PluginInvalid as exc:
            log.warning("%s", exc.detail, extra={"plugin": state.name})


def _granted(source: PluginSource, record: PluginRecord | None) -> tuple[str, ...]:
    """What a plugin may do beyond its sandbox: an upload what the operator granted at
    install; a local folder what its manifest asks (the operator put it there)."""
    if record is not None and record.source == "upload":
        return tuple(record.granted)
    return source.manifest.permissions.asked() if source.manifest else ()
