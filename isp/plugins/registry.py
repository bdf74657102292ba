"""``PluginRegistry``: who hooks which event, and ``emit`` to call them.

Dispatch reads one immutable mapping, event -> ``EventPlan`` (the enabled hooks in a
fixed order, with resolved timeouts). Every change (publish, withdraw, enable, disable,
a new default timeout) builds a new mapping and swaps it in with one assignment, so an
emit in flight keeps the snapshot it started with and never sees half a change.

The registry knows nothing of files, modules or the database: the loader publishes
validated plugins into it and the runtime persists enabled flags and quarantines.

It also owns what keeps one plugin from taking the core with it: each plugin's bounded
threads for its ``def`` hooks (``ISP_PLUGIN_THREADS``), the grace a cancelled hook gets
(``ISP_HOOK_GRACE``), and the quarantine table. A plugin is quarantined when one of its
hooks outlives its deadline by more than the grace; from then on its hooks are *held*:
a critical one fails the event at once with ``PluginQuarantined`` (503) and nothing is
called, a non-critical one reports the same error in its result. The listeners given to
:meth:`PluginRegistry.on_quarantine` (the runtime) persist it for the other instances.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar, Token
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast

from isp.errors import PluginError
from isp.plugins.dispatch import Emission, EventPlan
from isp.plugins.hooks import (
    Compensation,
    HookEntry,
    HookResult,
    Registration,
    function_name,
    offer_compensate,
    registration,
    stage_undo,
    staged_table,
)
from isp.plugins.manifest import check_event, check_timeout
from isp.plugins.outcomes import held
from isp.plugins.specs import SPECS_BY_NAME, SignatureMismatch, verify
from isp.plugins.threads import PluginThreads
from isp.plugins.watchdog import Watchdog

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class Hook(Protocol[P, R]):
    """What ``@registry.hook`` returns: the function itself, which also offers
    ``@<hook>.compensate`` to declare how to undo it (:mod:`isp.plugins.compensation`)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def compensate(self, undo: F) -> F: ...

DEFAULT_TIMEOUT = 10.0
DEFAULT_GRACE = 1.0
DEFAULT_THREADS = 4

log = logging.getLogger("isp.plugins.registry")


class _Published:
    __slots__ = ("enabled", "entries", "events", "vendors")

    def __init__(
        self,
        entries: tuple[HookEntry, ...],
        enabled: bool,
        events: frozenset[str],
        vendors: frozenset[str] = frozenset(),
    ):
        self.entries = entries
        self.enabled = enabled
        self.events = events
        self.vendors = vendors


class PluginRegistry:
    """The hook tables and the dispatcher.

    ``adhoc_owner``: a registry for tests accepts ``@hook`` outside a plugin import and
    publishes the function at once under that plugin name; the application's registry
    (``adhoc_owner=None``) refuses, because there a hook only exists through its plugin.
    """

    def __init__(
        self, *, default_timeout: float = DEFAULT_TIMEOUT, adhoc_owner: str | None = None
    ) -> None:
        self._default_timeout = check_timeout(default_timeout)
        self._adhoc_owner = adhoc_owner
        self._declared: frozenset[str] = frozenset()
        self._events: frozenset[str] = frozenset()
        self._plugins: dict[str, _Published] = {}
        self._plans: dict[str, EventPlan] = {}
        self._after_commit: dict[str, tuple[HookEntry, ...]] = {}
        self._drivers: dict[tuple[str, str], tuple[str, ...]] = {}
        self._grace = DEFAULT_GRACE
        self._thread_count = DEFAULT_THREADS
        self._threads: dict[str, PluginThreads] = {}
        self._quarantined: dict[str, str] = {}
        self._release_listeners: list[Callable[[str], None]] = []
        self._listeners: list[Callable[[str, str], None]] = []
        self.watchdog = Watchdog()

    # -- configuration ---------------------------------------------------------------

    def configure(
        self,
        *,
        default_timeout: float,
        grace: float | None = None,
        threads: int | None = None,
    ) -> None:
        """Set the timeout of hooks that declare none (``ISP_HOOK_TIMEOUT``), the grace of
        a cancelled hook (``ISP_HOOK_GRACE``) and each plugin's threads
        (``ISP_PLUGIN_THREADS``, for executors created from now on)."""
        self._default_timeout = check_timeout(default_timeout)
        if grace is not None:
            self._grace = float(grace)
        if threads is not None:
            self._thread_count = int(threads)
        self._rebuild()

    @property
    def grace(self) -> float:
        return self._grace

    def declare_events(self, events: Iterable[str]) -> None:
        """Add events to the catalogue hooks may register for (idempotent)."""
        names = frozenset(events)
        for name in names:
            check_event(name)
        self._declared |= names
        self._rebuild()

    @property
    def default_timeout(self) -> float:
        return self._default_timeout

    @property
    def events(self) -> frozenset[str]:
        """Declared events plus those declared by published plugins' manifests."""
        return self._events

    # -- registration ----------------------------------------------------------------

    def hook(
        self,
        event: str,
        *,
        timeout: float | None = None,
        plugin: str | None = None,
        critical: bool = True,
    ) -> Callable[[Callable[P, R]], Hook[P, R]]:
        """Register the decorated function as the plugin's hook for ``event``.

        ``timeout`` (seconds) wins over the manifest's and ``ISP_HOOK_TIMEOUT``.
        ``plugin`` and ``critical`` are for test registries only; a plugin declares
        criticality in its manifest.
        """
        return self._decorator(event, timeout, plugin, critical, after_commit=False)

    def after_commit(
        self, event: str, *, timeout: float | None = None, plugin: str | None = None
    ) -> Callable[[F], F]:
        """Register the decorated function to run once ``event``'s workflow committed.

        Called ``(obj, delivery, <the event's other arguments by name>)`` through the
        outbox, at least once, never for a workflow that rolled back (see
        :mod:`isp.plugins.outbox`). ``db`` is then the plain connection, not the
        workflow's transaction.
        """
        return cast(
            Callable[[F], F], self._decorator(event, timeout, plugin, True, after_commit=True)
        )

    def _decorator(
        self,
        event: str,
        timeout: float | None,
        plugin: str | None,
        critical: bool,
        *,
        after_commit: bool,
    ) -> Callable[[Callable[P, R]], Hook[P, R]]:
        if timeout is not None:
            check_timeout(timeout)  # fail at the decorator line, not at import's end

        def decorate(func: Callable[P, R]) -> Hook[P, R]:
            reg = registration(event, func, timeout, after_commit=after_commit)
            table = staged_table()
            if table is not None:
                if plugin is not None or not critical:
                    raise TypeError(
                        f"registry.hook({event!r}): plugin= and critical= are for test "
                        "registries; declare criticality in manifest.json"
                    )
                table.append(reg)
                if not after_commit:  # an after-commit hook has nothing to undo
                    offer_compensate(reg, lambda undo: stage_undo(table, reg, undo))
                return cast(Hook[P, R], func)
            if self._adhoc_owner is None:
                raise RuntimeError(
                    f"registry.hook({event!r}) on {reg.function} ran outside a plugin import: "
                    "hooks are collected when the loader imports plugins/<name>/; in tests "
                    "use the plugin_registry fixture"
                )
            entry = self._register_adhoc(plugin or self._adhoc_owner, reg, critical)
            if not after_commit:
                offer_compensate(reg, lambda undo: self._compensate_adhoc(entry, undo))
            return cast(Hook[P, R], func)

        return decorate

    def _register_adhoc(self, owner: str, reg: Registration, critical: bool) -> HookEntry:
        """A test registry publishes a hook at once, validated as the loader would."""
        if reg.event not in self._events:
            known = ", ".join(sorted(self._events)) or "(none declared)"
            raise ValueError(f"registry.hook({reg.event!r}): unknown event; known: {known}")
        spec = SPECS_BY_NAME.get(reg.event)
        if spec is not None:
            try:
                verify(reg.func, reg.function, spec, after_commit=reg.after_commit)
            except SignatureMismatch as exc:
                raise ValueError(f"plugin {owner!r}: hook for {reg.event}: {exc}") from None
        current = self._plugins.get(owner)
        entries = current.entries if current else ()
        entry = HookEntry(owner, reg, timeout=reg.timeout, critical=critical)
        self.publish(
            owner,
            (*entries, entry),
            enabled=current.enabled if current else True,
            vendors=current.vendors if current else (),
        )
        return entry

    @staticmethod
    def _compensate_adhoc(entry: HookEntry, undo: Callable[..., Any]) -> None:
        """A test registry's ``@hook.compensate``: checked as the loader checks it."""
        if entry.compensation is not None:
            raise TypeError(f"{entry.function} for {entry.event!r} already has a compensation")
        spec = SPECS_BY_NAME.get(entry.event)
        if spec is not None:
            try:
                verify(undo, function_name(undo), spec)
            except SignatureMismatch as exc:
                raise ValueError(
                    f"plugin {entry.plugin!r}: compensation of {entry.function}: {exc}"
                ) from None
        entry.compensation = Compensation(undo)

    def publish(
        self,
        plugin: str,
        entries: Sequence[HookEntry],
        *,
        enabled: bool = True,
        events: Iterable[str] = (),
        vendors: Iterable[str] = (),
    ) -> None:
        """Install (or atomically replace) a validated plugin's hooks.

        ``vendors``: the device vendors its hooks drive (the manifest's ``vendors``).
        """
        threads = self.threads_of(plugin)
        for entry in entries:
            entry.threads = threads
        self._plugins[plugin] = _Published(
            tuple(entries), enabled, frozenset(events), frozenset(vendors)
        )
        self._rebuild()

    def withdraw(self, plugin: str) -> None:
        """Remove a plugin's hooks; emits already running finish with them."""
        if self._plugins.pop(plugin, None) is not None:
            self._rebuild()
        threads = self._threads.pop(plugin, None)
        if threads is not None:
            threads.shutdown()

    def threads_of(self, plugin: str) -> PluginThreads:
        """The plugin's executor for ``def`` hooks (created on first use)."""
        threads = self._threads.get(plugin)
        if threads is None:
            threads = PluginThreads(
                plugin, self._thread_count, grace=lambda: self._grace, on_overrun=self.quarantine
            )
            self._threads[plugin] = threads
        return threads

    def close(self) -> None:
        """Shut every plugin's executor down (threads still running finish on their own)."""
        for threads in self._threads.values():
            threads.shutdown()
        self._threads.clear()

    # -- quarantine ------------------------------------------------------------------

    def on_quarantine(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(plugin, reason)`` when this registry quarantines a plugin."""
        self._listeners.append(listener)

    def quarantine(self, plugin: str, reason: str) -> None:
        """A hook of ``plugin`` outlived its deadline: hold its hooks and tell listeners."""
        if plugin in self._quarantined:
            return
        self.set_quarantine(plugin, reason)
        log.error(
            "plugin %s quarantined: %s", plugin, reason, extra={"plugin": plugin, "reason": reason}
        )
        for listener in self._listeners:
            listener(plugin, reason)

    def on_release(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(plugin)`` when a quarantine of this registry is lifted (the
        outbox then delivers what it held for the plugin)."""
        self._release_listeners.append(listener)

    def set_quarantine(self, plugin: str, reason: str | None) -> None:
        """Hold (``reason``) or release (None) a plugin's hooks, without telling the
        quarantine listeners: what the runtime calls for a state read from the database
        or an admin's enable."""
        if self._quarantined.get(plugin) == reason:
            return
        if reason is None:
            del self._quarantined[plugin]
        else:
            self._quarantined[plugin] = reason
        self._rebuild()
        if reason is None:
            for listener in self._release_listeners:
                listener(plugin)

    def quarantined(self, plugin: str) -> str | None:
        """Why ``plugin`` is quarantined, or None."""
        return self._quarantined.get(plugin)

    def quarantined_plugins(self) -> list[str]:
        """The plugins quarantined now, by name."""
        return sorted(self._quarantined)

    def set_enabled(self, plugin: str, enabled: bool) -> None:
        published = self._plugins.get(plugin)
        if published is None:
            raise KeyError(plugin)
        if published.enabled != enabled:
            self._plugins[plugin] = _Published(
                published.entries, enabled, published.events, published.vendors
            )
            self._rebuild()

    # -- introspection ---------------------------------------------------------------

    def is_enabled(self, plugin: str) -> bool:
        published = self._plugins.get(plugin)
        return published is not None and published.enabled

    def plugins(self) -> list[str]:
        return sorted(self._plugins)

    def entries(self, plugin: str) -> tuple[HookEntry, ...]:
        published = self._plugins.get(plugin)
        return published.entries if published else ()

    def hooks_for(self, event: str) -> tuple[HookEntry, ...]:
        """The enabled hooks ``emit(event)`` would call now, in call order."""
        plan = self._plans.get(event)
        return plan.hooks if plan else ()

    def drivers(self, event: str, vendor: str) -> tuple[str, ...]:
        """The enabled plugins with a hook for ``event`` that declare they drive ``vendor``
        devices, by name (empty when none would act on such a device)."""
        return self._drivers.get((event, vendor), ())

    def after_commit_hooks(self, event: str) -> tuple[HookEntry, ...]:
        """The enabled after-commit hooks of ``event`` (each gets one outbox row)."""
        return self._after_commit.get(event, ())

    def after_commit_entry(self, event: str, plugin: str, function: str) -> HookEntry | None:
        """The enabled after-commit hook an outbox row names, if it is still there."""
        for entry in self._after_commit.get(event, ()):
            if entry.plugin == plugin and entry.function == function:
                return entry
        return None

    def timeout_of(self, entry: HookEntry) -> float:
        return entry.timeout or self._default_timeout

    # -- dispatch --------------------------------------------------------------------

    async def emit(self, event: str, /, *args: Any, **kwargs: Any) -> list[HookResult]:
        """Call every enabled hook of ``event`` concurrently; see :mod:`isp.plugins.dispatch`.

        Returns one ``HookResult`` per hook in a stable order (plugin name, then
        registration). Raises the failing hook's ``PluginError`` (``HookTimeout``,
        ``HookCrashed``), or ``WorkflowAborted`` when several failed, only after every
        hook it started has finished.
        """
        plan = self._plans.get(event)
        if plan is None:
            if event not in self._events:
                raise ValueError(f"emit({event!r}): unknown event")
            return []
        if plan.held:
            blocked = self._hold(plan, event)
            if not plan.hooks:
                return blocked
            results = await Emission(plan, event, self.watchdog, self._abandoned).run(args, kwargs)
            return [*results, *blocked]
        return await Emission(plan, event, self.watchdog, self._abandoned).run(args, kwargs)

    @staticmethod
    def _hold(plan: EventPlan, event: str) -> list[HookResult]:
        """The held hooks' results; a critical one raises before any hook is called."""
        results = [held(entry, event, reason) for entry, reason in plan.held]
        for (entry, _), result in zip(plan.held, results, strict=True):
            if entry.critical and result.error is not None:
                raise result.error
        return results

    async def call(
        self, entry: HookEntry, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HookResult:
        """Run one hook outside an emit (an outbox delivery) under the same deadline,
        grace and quarantine rules as every hook; its failure is in the result."""
        plan = EventPlan((entry,), self._default_timeout, self._grace)
        emission = Emission(plan, event, self.watchdog, self._abandoned)
        try:
            return (await emission.run(args, kwargs))[0]
        except PluginError as exc:  # a critical hook's failure is raised by the emission
            return HookResult(entry.plugin, entry.hook, None, 0.0, exc)

    def _abandoned(self, entry: HookEntry, reason: str) -> None:
        self.quarantine(entry.plugin, reason)

    def _rebuild(self) -> None:
        events = set(self._declared)
        table: dict[str, list[HookEntry]] = {}
        holds: dict[str, list[tuple[HookEntry, str]]] = {}
        after_commit: dict[str, list[HookEntry]] = {}
        drivers: dict[tuple[str, str], list[str]] = {}
        for name in sorted(self._plugins):
            published = self._plugins[name]
            events |= published.events
            if published.enabled:
                reason = self._quarantined.get(name)
                for entry in published.entries:
                    if entry.after_commit:
                        after_commit.setdefault(entry.event, []).append(entry)
                        continue
                    if reason is None:
                        table.setdefault(entry.event, []).append(entry)
                    else:
                        holds.setdefault(entry.event, []).append((entry, reason))
                    for vendor in published.vendors:
                        drivers.setdefault((entry.event, vendor), []).append(name)
        plans = {
            event: EventPlan(
                tuple(table.get(event, ())),
                self._default_timeout,
                self._grace,
                tuple(holds.get(event, ())),
            )
            for event in {*table, *holds}
        }
        self._events = frozenset(events)
        self._drivers = {key: tuple(names) for key, names in drivers.items()}
        self._after_commit = {event: tuple(hooks) for event, hooks in after_commit.items()}
        self._plans = plans  # the one assignment emits observe


_CURRENT: ContextVar[PluginRegistry | None] = ContextVar("isp_current_registry", default=None)


class CurrentRegistry:
    """What ``from isp.plugins import registry`` is: the registry of the application
    serving the current request or task, so two apps in one process keep their plugins
    apart while plugin code and the core keep writing ``registry.hook`` / ``registry.emit``.

    An app binds its own registry (:meth:`bind`) when it starts serving and for every
    request, so the tasks it starts inherit it; outside any app (a script, a test that
    builds no app) the process default answers.
    """

    def __init__(self) -> None:
        self._default = PluginRegistry()

    def current(self) -> PluginRegistry:
        return _CURRENT.get() or self._default

    @staticmethod
    def bind(target: PluginRegistry) -> Token[PluginRegistry | None]:
        """Make ``target`` the registry of this context and of the tasks it starts."""
        return _CURRENT.set(target)

    def hook(
        self,
        event: str,
        *,
        timeout: float | None = None,
        plugin: str | None = None,
        critical: bool = True,
    ) -> Callable[[Callable[P, R]], Hook[P, R]]:
        return self.current().hook(event, timeout=timeout, plugin=plugin, critical=critical)

    def after_commit(
        self, event: str, *, timeout: float | None = None, plugin: str | None = None
    ) -> Callable[[F], F]:
        return self.current().after_commit(event, timeout=timeout, plugin=plugin)

    async def emit(self, event: str, /, *args: Any, **kwargs: Any) -> list[HookResult]:
        return await self.current().emit(event, *args, **kwargs)

    @property
    def default_timeout(self) -> float:
        return self.current().default_timeout

    @property
    def events(self) -> frozenset[str]:
        return self.current().events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


registry: Final = CurrentRegistry()
"""The author-facing registry: the running app's (see :class:`CurrentRegistry`)."""
