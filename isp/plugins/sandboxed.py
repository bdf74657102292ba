"""A plugin that runs in the sandbox, as the runtime and the registry see it.

:func:`start` never imports the plugin here: it checks what needs only the manifest,
starts the plugin's worker (a :class:`~isp.plugins.sandbox.SandboxedPlugin` under
bubblewrap), and builds from the hooks the worker registered one registry entry each,
whose function forwards the call to the worker: the event's objects as snapshots
(:mod:`isp.plugins.snapshots`), ``db`` as the plugin's key-value store on the
workflow's connection (:mod:`isp.plugins.values`), the hook's resolved timeout as the
worker's deadline. Results, ``PluginError`` and timeouts come back as in process; a
worker crash is a 502 ``WorkerCrashed``; crashes past the limit quarantine the plugin
through the registry, as a hook that outlived its deadline does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Final

from pydantic import BaseModel

import isp
from isp.config import Settings
from isp.errors import PluginError, PluginInvalid
from isp.plugins.discovery import PluginSource
from isp.plugins.hooks import NAMESPACE, Compensation, HookEntry, Registration
from isp.plugins.loader import MODELS, LoadedPlugin, preflight
from isp.plugins.manifest import resolve_timeout
from isp.plugins.plugin import Plugin
from isp.plugins.registry import PluginRegistry
from isp.plugins.sandbox import (
    BubblewrapLauncher,
    Launcher,
    Limits,
    SandboxedPlugin,
    SandboxHook,
    SandboxUnavailable,
    WorkerSpec,
)
from isp.plugins.settings import SettingsStore
from isp.plugins.settings_schema import model_from_schema, worker_values
from isp.plugins.snapshots import snapshot
from isp.plugins.values import values_for

CANNOT_SANDBOX: Final = (
    "has models.py: a plugin with tables of its own needs the service's database, so it "
    "cannot be sandboxed; sign it with a key in ISP_PLUGIN_TRUSTED_KEYS to run it in "
    "process, or keep its data in the sandbox's key-value store (db.get/put/delete)"
)


def refusal(source: PluginSource) -> str | None:
    """Why ``source`` cannot run in the sandbox at all, or None."""
    if (source.path / f"{MODELS}.py").exists() or (source.path / MODELS).is_dir():
        return f"{source.label}: {CANNOT_SANDBOX}"
    return None


def launcher() -> Launcher:
    """The launcher of this machine (bubblewrap); ``SandboxUnavailable`` when missing."""
    return BubblewrapLauncher()


async def start(
    source: PluginSource,
    known_events: Iterable[str],
    settings: Settings,
    registry: PluginRegistry,
    *,
    granted: Iterable[str] = (),
    settings_store: SettingsStore | None = None,
    make_launcher: Callable[[], Launcher] = launcher,
) -> tuple[LoadedPlugin, SandboxedPlugin]:
    """Start ``source``'s worker; its entries are ready to publish. ``PluginInvalid``
    (the plugin is ``status: "error"`` with the reason) when it cannot run there."""
    manifest = preflight(source, known_events, isp.__version__)
    why = await asyncio.to_thread(refusal, source)
    if why is not None:
        raise PluginInvalid(why, plugin=source.name)
    try:
        chosen = make_launcher()
    except SandboxUnavailable as exc:
        raise PluginInvalid(
            f"{source.label}: cannot run in its sandbox: {exc.detail}; it is not run in "
            "process instead (install bubblewrap, or sign the plugin with a trusted key)",
            plugin=source.name,
        ) from None
    grants = frozenset(granted)
    limits = Limits.from_settings(settings, source.name)  # the operator's, never the plugin's
    spec = WorkerSpec(source.name, source.path, limits, network="network" in grants)
    worker = SandboxedPlugin(
        spec,
        launcher=chosen,
        start_timeout=settings.plugin_import_timeout,
        grace=registry.grace,
        on_quarantine=lambda reason: registry.quarantine(source.name, reason),
    )
    try:
        await worker.start()
    except PluginError as exc:
        await worker.stop()
        raise PluginInvalid(f"{source.label}: {exc.detail}", plugin=source.name) from None
    except BaseException:
        await worker.stop()
        raise
    entries: list[HookEntry] = []
    for hook in worker.hooks:
        declared = manifest.hook(hook.event, after_commit=hook.after_commit)
        if declared is None:  # the worker's loader checked it; never trust it blindly
            await worker.stop()
            raise PluginInvalid(
                f"{source.label}: {hook.function} hooks {hook.event!r}, which its manifest "
                "does not declare",
                plugin=source.name,
            )
        entries.append(
            _entry(source.name, hook, worker, registry, declared.critical,
                   resolve_timeout(hook.timeout, declared.timeout), secrets="secrets" in grants)
        )  # fmt: skip
    try:
        plugin = _plugin(source.name, worker, settings)
    except PluginInvalid:
        await worker.stop()
        raise
    plugin.bind(manifest, settings_store)
    _serve_settings(source.name, worker, plugin.settings_store, secrets="secrets" in grants)
    return LoadedPlugin(source.name, source.path, manifest, plugin, {}, tuple(entries)), worker


def _plugin(name: str, worker: SandboxedPlugin, settings: Settings) -> Plugin[Any]:
    """The host's ``Plugin``: callbacks that call the worker's, and a stand-in of the
    plugin's settings model (:mod:`isp.plugins.settings_schema`) when it has one."""
    schema = worker.settings_schema
    model = None if schema is None else model_from_schema(name, schema)
    plugin: Plugin[Any] = Plugin(settings=model) if model is not None else Plugin()
    for callback, forward in _callbacks(worker, settings.hook_timeout).items():
        setattr(plugin, callback, forward)
    return plugin


def _serve_settings(
    name: str, worker: SandboxedPlugin, store: SettingsStore | None, *, secrets: bool
) -> None:
    """Send the worker the values in force now and after every change, until it stops."""
    if store is None or store.model_of(name) is None:
        return

    def send(instance: BaseModel) -> None:
        worker.configure(worker_values(instance, secrets=secrets))

    worker.on_stop.append(store.watch(name, send))
    current = store.current(name)
    if current is not None:
        send(current)


def _callbacks(worker: SandboxedPlugin, timeout: float) -> dict[str, Callable[[], Any]]:
    """The plugin's lifecycle callbacks, each calling its own in the worker."""
    found: dict[str, Callable[[], Any]] = {}
    for name in worker.callbacks:

        async def callback(name: str = name) -> None:
            await worker.call(name, None, {}, timeout=timeout)

        found[name.removeprefix("plugin.")] = callback
    return found


def _entry(
    name: str,
    hook: SandboxHook,
    worker: SandboxedPlugin,
    registry: PluginRegistry,
    critical: bool,
    timeout: float | None,
    *,
    secrets: bool,
) -> HookEntry:
    """One registry entry whose function calls ``hook`` in the worker."""
    entry: list[HookEntry] = []
    forward = _forwarder(name, hook.function, worker, lambda: registry.timeout_of(entry[0]),
                         secrets=secrets)  # fmt: skip
    registration = Registration(hook.event, forward, timeout, True, hook.after_commit)
    entry.append(HookEntry(name, registration, timeout=timeout, critical=critical))
    undo = hook.compensation()
    if undo is not None:  # undone in the worker too, under the hook's timeout
        entry[0].compensation = Compensation(
            _forwarder(name, undo.function, worker, lambda: registry.timeout_of(entry[0]),
                       secrets=secrets)  # fmt: skip
        )
    return entry[0]


def _forwarder(
    name: str,
    function: str,
    worker: SandboxedPlugin,
    timeout: Callable[[], float],
    *,
    secrets: bool,
) -> Callable[..., Any]:
    """An ``async def`` that calls ``function`` in the worker with snapshots and a store."""

    async def forward(subject: Any = None, /, **named: Any) -> Any:
        db = named.pop("db", None)
        arguments = {key: snapshot(value, secrets=secrets) for key, value in named.items()}
        return await worker.call(
            function,
            snapshot(subject, secrets=secrets),
            arguments,
            timeout=timeout(),
            store=values_for(name, db),
        )

    # what logs, stats and problems name: the plugin's function (``handlers.stamp``)
    forward.__module__ = f"{NAMESPACE}.{name}"
    forward.__qualname__ = forward.__name__ = function
    return forward
