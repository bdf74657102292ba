"""Run: import a described plugin under ``isp_plugins.<name>``, validate it, hand it over.

:func:`load` is all-or-nothing. The plugin's hooks go to a staging table during the
import and come back inside a :class:`LoadedPlugin` only when the whole plugin is valid:
manifest checks first (no code runs for a plugin that cannot work here), then the
import, then ``plugin`` and the hooks against the manifest. Publishing into the registry
is the caller's move, so a reload can import a new version while the old one serves,
and swap only when the new one is good.

Modules are compiled from source every time (:class:`FreshSourceLoader`): a ``.pyc``
from a file rewritten within the same second with the same size would otherwise load
stale code. ``sys.path`` is never touched; a meta-path finder serves ``isp_plugins.*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType

import isp
from isp.errors import PluginInvalid, hook_fields
from isp.plugins.discovery import PluginSource
from isp.plugins.hooks import NAMESPACE, HookEntry, Registration, function_name, staging
from isp.plugins.manifest import Manifest, resolve_timeout
from isp.plugins.plugin import Plugin
from isp.plugins.settings import SettingsStore
from isp.plugins.specs import SPECS_BY_NAME, EventSpec, SignatureMismatch, verify

HANDLERS = "handlers"
MODELS = "models"


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A validated plugin, not yet published: its code, object, manifest and hooks."""

    name: str
    path: Path
    manifest: Manifest
    plugin: Plugin
    modules: dict[str, ModuleType]
    entries: tuple[HookEntry, ...]


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles from source on every import: no bytecode is read or written."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Finds ``isp_plugins.<name>.<sub>`` in the plugin's folder, loaded fresh."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not fullname.startswith(f"{NAMESPACE}.") or fullname.count(".") < 2:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if (
            spec is None
            or spec.origin is None
            or type(spec.loader) is not (importlib.machinery.SourceFileLoader)
        ):
            return spec
        return importlib.util.spec_from_file_location(
            fullname,
            spec.origin,
            loader=FreshSourceLoader(fullname, spec.origin),
            submodule_search_locations=spec.submodule_search_locations,
        )


def load(
    source: PluginSource,
    known_events: Iterable[str],
    isp_version: str = isp.__version__,
    *,
    keep_models: bool = False,
    settings: SettingsStore | None = None,
) -> LoadedPlugin:
    """Import and validate ``source``; raises ``PluginInvalid`` naming file and problem.

    ``settings``: the store the plugin's ``plugin.settings`` reads (the loading app's).

    Blocking (file reads, module execution). Whatever was in ``sys.modules`` under the
    plugin's namespace before (a version still serving) is put back when this fails.
    """
    manifest = preflight(source, known_events, isp_version)
    previous = detach(source.name)
    if keep_models:
        # Hot reload: the models module (registered with Tortoise) survives, so the new
        # handlers use the same model classes; schema changes wait for `isp migrate`.
        reinstate({k: m for k, m in previous.items() if k == f"{NAMESPACE}.{source.name}.{MODELS}"})
    try:
        exposed, registrations = _import(source)
        plugin, entries = _validate(source, manifest, exposed, registrations)
    except BaseException:
        detach(source.name)
        reinstate(previous)
        raise
    plugin.bind(manifest, settings)
    modules = _namespace_modules(source.name)
    return LoadedPlugin(source.name, source.path, manifest, plugin, modules, entries)


async def load_within(
    source: PluginSource,
    known_events: Iterable[str],
    limit: float,
    *,
    keep_models: bool = False,
    restore: Callable[[], dict[str, ModuleType]] = dict,
    settings: SettingsStore | None = None,
) -> LoadedPlugin:
    """:func:`load` in a thread of its own, given up after ``limit`` seconds.

    A thread cannot be killed: an import that overruns is abandoned (a daemon thread, so
    it never holds the process at exit; the shared worker pool stays free) and the
    plugin fails with ``PluginInvalid``. When the abandoned import ends, whatever it
    left in ``sys.modules`` is replaced by ``restore()``, the modules of the version
    serving by then.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[LoadedPlugin] = loop.create_future()
    abandoned = threading.Event()

    def settle(result: LoadedPlugin | None, error: BaseException | None) -> None:
        if abandoned.is_set():
            detach(source.name)
            reinstate(restore())
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: LoadedPlugin | None = None
        error: BaseException | None = None
        try:
            result = load(source, known_events, keep_models=keep_models, settings=settings)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"import-{source.name}", daemon=True).start()
    try:
        async with asyncio.timeout(limit):
            return await asyncio.shield(done)
    except TimeoutError:
        abandoned.set()
        detach(source.name)
        reinstate(restore())
        raise PluginInvalid(
            f"{source.label}: did not finish importing within {limit:g} s "
            "(ISP_PLUGIN_IMPORT_TIMEOUT); move slow work out of import time",
            plugin=source.name,
        ) from None


def preflight(source: PluginSource, known_events: Iterable[str], isp_version: str) -> Manifest:
    """The checks that need only the manifest, run before any plugin code."""
    if source.error is not None or source.manifest is None:
        raise PluginInvalid(source.error or f"{source.label}: unreadable", plugin=source.name)
    manifest = source.manifest
    incompatible = manifest.isp_incompatibility(isp_version)
    if incompatible:
        raise PluginInvalid(f"{source.label}/manifest.json: {incompatible}", plugin=source.name)
    known = set(known_events) | set(manifest.events)
    for spec in manifest.hooks:
        if spec.name not in known:
            raise PluginInvalid(
                f"{source.label}/manifest.json: hooks: {spec.name!r} is not a known event; "
                f"known events: {', '.join(sorted(known))} (a plugin may add events in "
                '"events")',
                plugin=source.name,
            )
    return manifest


def detach(name: str) -> dict[str, ModuleType]:
    """Remove the plugin's modules from ``sys.modules`` and return them (unload = discard)."""
    modules = _namespace_modules(name)
    for module_name in modules:
        del sys.modules[module_name]
    namespace = sys.modules.get(NAMESPACE)
    if namespace is not None and name in namespace.__dict__:
        delattr(namespace, name)
    return modules


def reinstate(modules: dict[str, ModuleType]) -> None:
    """Put a plugin version's modules back (its code imports lazily from them)."""
    sys.modules.update(modules)


def _namespace_modules(name: str) -> dict[str, ModuleType]:
    prefix = f"{NAMESPACE}.{name}"
    return {
        key: module
        for key, module in list(sys.modules.items())
        if key == prefix or key.startswith(f"{prefix}.")
    }


# Plugins import in threads side by side; what they change of the process-wide import
# state (the namespace package, its finder, the path importer cache) changes under this
# lock: two concurrent importlib.invalidate_caches() calls delete the same cache entry,
# and the second raises KeyError.
_IMPORT_STATE = threading.Lock()


def _ensure_namespace() -> None:
    """Create the ``isp_plugins`` package (a bare namespace) and its finder, once."""
    with _IMPORT_STATE:
        _create_namespace()


def _create_namespace() -> None:
    if NAMESPACE not in sys.modules:
        namespace = ModuleType(NAMESPACE, "Plugins loaded by isp.plugins.loader.")
        namespace.__path__ = []
        namespace.__spec__ = importlib.machinery.ModuleSpec(NAMESPACE, None, is_package=True)
        sys.modules[NAMESPACE] = namespace
    if not any(isinstance(finder, _PluginFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PluginFinder())


def _import(source: PluginSource) -> tuple[object, list[Registration]]:
    _ensure_namespace()
    module_name = f"{NAMESPACE}.{source.name}"
    init = source.path / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        module_name,
        init,
        loader=FreshSourceLoader(module_name, str(init)),
        submodule_search_locations=[str(source.path)],
    )
    if spec is None or spec.loader is None:  # pragma: no cover - a file location always works
        raise PluginInvalid(f"{source.label}/__init__.py: cannot be imported", plugin=source.name)
    module = importlib.util.module_from_spec(spec)
    with _IMPORT_STATE:
        importlib.invalidate_caches()  # a hot reload may have added files a cache has not seen
    with staging() as table:
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
            if (source.path / f"{MODELS}.py").is_file() and (
                f"{module_name}.{MODELS}" not in sys.modules
            ):
                importlib.import_module(f"{module_name}.{MODELS}")
            if (source.path / f"{HANDLERS}.py").is_file() and (
                f"{module_name}.{HANDLERS}" not in sys.modules
            ):
                importlib.import_module(f"{module_name}.{HANDLERS}")
        except (Exception, SystemExit) as exc:
            raise PluginInvalid(_import_failure(source, exc), plugin=source.name) from exc
    return getattr(module, "plugin", None), table


def _import_failure(source: PluginSource, exc: BaseException) -> str:
    """``plugins/foo/handlers.py:3: import failed: ModuleNotFoundError: ...``."""
    where = f"{source.label}/__init__.py"
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_relative(source, exc.filename)}:{exc.lineno}"
    else:
        root = source.path.resolve()
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if Path(frame.filename).resolve().is_relative_to(root):
                where = f"{_relative(source, frame.filename)}:{frame.lineno}"
                break
    return f"{where}: import failed: {type(exc).__name__}: {exc}"


def _relative(source: PluginSource, filename: str) -> str:
    try:
        inner = Path(filename).resolve().relative_to(source.path.resolve())
    except ValueError:
        return filename
    return f"{source.label}/{inner.as_posix()}"


def _validate(
    source: PluginSource, manifest: Manifest, plugin: object, registrations: list[Registration]
) -> tuple[Plugin, tuple[HookEntry, ...]]:
    """``plugin`` is a Plugin, the registered hooks are the declared events (one or more
    functions each), and each hook fits its event's specification."""
    if not isinstance(plugin, Plugin):
        raise PluginInvalid(
            f"{source.label}/__init__.py: must expose `plugin = Plugin()` "
            f"(from isp.plugins import Plugin), found {type(plugin).__name__}",
            plugin=source.name,
        )
    registered = {(reg.event, reg.after_commit) for reg in registrations}
    for declared in manifest.hooks:
        if (declared.name, declared.after_commit) not in registered:
            decorator = "after_commit" if declared.after_commit else "hook"
            other = (declared.name, not declared.after_commit) in registered
            flag = "true" if not declared.after_commit else "false"
            hint = f'; or set "after_commit": {flag} for it in manifest.json' if other else ""
            raise PluginInvalid(
                f"{source.label}/manifest.json: hooks: declares {declared.name!r}"
                f"{' (after_commit)' if declared.after_commit else ''} but no function is "
                f"registered for it (add @registry.{decorator}({declared.name!r}){hint})",
                plugin=source.name,
            )
    entries: list[HookEntry] = []
    for reg in registrations:  # several per event are fine: each is its own hook
        spec = manifest.hook(reg.event, after_commit=reg.after_commit)
        if spec is None:
            declare = (
                f'{{"name": {reg.event!r}, "after_commit": true}}'
                if reg.after_commit
                else repr(reg.event)
            )
            raise PluginInvalid(
                f"{source.label}: {reg.function} is registered for {reg.event!r}"
                f"{' after commit' if reg.after_commit else ''} but manifest.json does not "
                f'declare it: add {declare} to "hooks"',
                plugin=source.name,
            )
        event_spec = SPECS_BY_NAME.get(reg.event)
        if event_spec is not None:
            try:
                verify(reg.func, reg.function, event_spec, after_commit=reg.after_commit)
            except SignatureMismatch as exc:
                raise PluginInvalid(
                    f"{source.label}: hook {reg.function} for {reg.event}: {exc}",
                    **hook_fields(source.name, reg.function, reg.event),
                ) from None
            if reg.undo is not None:
                _verify_compensation(source, reg, event_spec)
        timeout = resolve_timeout(reg.timeout, spec.timeout)
        entries.append(HookEntry(source.name, reg, timeout=timeout, critical=spec.critical))
    return plugin, tuple(entries)


def _verify_compensation(source: PluginSource, reg: Registration, event_spec: EventSpec) -> None:
    """A compensation gets its hook's arguments, so it is checked against the same event."""
    assert reg.undo is not None
    name = function_name(reg.undo)
    try:
        verify(reg.undo, name, event_spec)
    except SignatureMismatch as exc:
        raise PluginInvalid(
            f"{source.label}: compensation {name} of hook {reg.function} for {reg.event}: {exc}",
            plugin=source.name,
            hook=name,
            event=reg.event,
        ) from None
