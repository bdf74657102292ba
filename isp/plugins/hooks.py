"""Hook records: staged by the decorator, published by the registry, reported by emit.

``@registry.hook(event)`` runs while the loader imports a plugin. It cannot know the
plugin from its arguments, so the loader opens a *staging table* in a context variable
for the duration of the import; the decorator appends there, and nothing reaches the
dispatch tables until the loader has validated the whole plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from isp.errors import PluginError
from isp.plugins.manifest import check_event, check_timeout
from isp.plugins.specs import accepted_keywords
from isp.plugins.stats import HookStats
from isp.plugins.threads import PluginThreads

NAMESPACE: Final = "isp_plugins"

_STAGING: ContextVar[list[Registration] | None] = ContextVar("isp_plugin_staging", default=None)


@dataclass(frozen=True, slots=True)
class Registration:
    """A hook as the decorator saw it: event, function and the decorator's timeout."""

    event: str
    func: Callable[..., Any]
    timeout: float | None
    is_async: bool
    after_commit: bool = False
    undo: Callable[..., Any] | None = None  # the ``@hook.compensate`` function, if any

    @property
    def function(self) -> str:
        """``handlers.provision``: the function's name inside its plugin, for logs and errors."""
        return function_name(self.func)


def function_name(func: Callable[..., Any]) -> str:
    """``handlers.provision``: a plugin function's module inside its plugin and its name."""
    module = str(getattr(func, "__module__", "") or "")
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == NAMESPACE:
        module = ".".join(parts[2:])
    qualname = str(getattr(func, "__qualname__", repr(func)))
    return f"{module}.{qualname}" if module else qualname


def registration(
    event: str, func: Callable[..., Any], timeout: float | None, *, after_commit: bool = False
) -> Registration:
    """Validate a hook when it is registered, not when it is first called (as pluggy does).

    ``after_commit``: the hook runs after the workflow committed, through the outbox.
    """
    try:
        check_event(event)
        if timeout is not None:
            check_timeout(timeout)
    except ValueError as exc:
        raise ValueError(f"registry.hook({event!r}, timeout={timeout!r}): {exc}") from None
    check_function(f"registry.hook({event!r})", func)
    return Registration(
        event, func, float(timeout) if timeout else None, is_async(func), after_commit
    )


def check_function(decorator: str, func: Callable[..., Any]) -> None:
    """A hook or a compensation is an ``async def`` or ``def`` function that returns."""
    if not callable(func):
        raise TypeError(f"{decorator} decorates {func!r}, which is not callable")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise TypeError(
            f"{decorator} decorates generator {func.__qualname__}: "
            "a hook is an 'async def' or 'def' function that returns"
        )


def is_async(func: Callable[..., Any]) -> bool:
    """The one sync-or-async rule, for hooks and lifecycle callbacks alike: an ``async
    def`` function, or a callable object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        type(func).__call__
    )


@contextmanager
def staging() -> Iterator[list[Registration]]:
    """Collect the hooks registered inside the ``with`` block (the loader's import)."""
    table: list[Registration] = []
    token = _STAGING.set(table)
    try:
        yield table
    finally:
        _STAGING.reset(token)


def staged_table() -> list[Registration] | None:
    return _STAGING.get()


def offer_compensate(
    reg: Registration, attach: Callable[[Callable[..., Any]], None]
) -> None:
    """Give the hook function its ``.compensate`` decorator: ``attach(undo)`` records
    ``undo`` as the compensation of ``reg`` (staged, or published at once in a test
    registry). A function registered for several events compensates the last one."""

    def compensate(undo: Callable[..., Any]) -> Callable[..., Any]:
        check_function(f"{reg.function}.compensate", undo)
        attach(undo)
        return undo

    with suppress(AttributeError, TypeError):  # a builtin or a slotted callable object
        reg.func.compensate = compensate  # type: ignore[attr-defined]


def stage_undo(table: list[Registration], reg: Registration, undo: Callable[..., Any]) -> None:
    """Record ``undo`` on ``reg`` in the staging table (once per hook)."""
    if staged_table() is not table:
        raise RuntimeError(f"{reg.function}.compensate ran after its plugin's import ended")
    for index, staged in enumerate(table):
        if staged.func is reg.func and staged.event == reg.event:
            if staged.undo is not None:
                raise TypeError(
                    f"{reg.function} for {reg.event!r} already has a compensation "
                    f"({function_name(staged.undo)}): declare one per hook"
                )
            table[index] = replace(staged, undo=undo)
            return
    raise RuntimeError(f"{reg.function}.compensate ran after its plugin's import ended")


class Compensation:
    """How to undo one hook (``@hook.compensate``): run when the workflow aborts after the
    hook acted, with the hook's arguments and timeout (see :mod:`isp.plugins.compensation`).
    ``stats`` counts its calls as a hook's are counted."""

    __slots__ = ("func", "function", "is_async", "stats", "takes")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.function = function_name(func)
        self.is_async = is_async(func)
        self.takes = accepted_keywords(func)
        self.stats = HookStats()

    def arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The named arguments of one call this compensation accepts (as for hooks)."""
        return _accepted(self.takes, kwargs)


class HookEntry:
    """A published hook: one plugin's function for one event, with its stats.

    A plugin may have several hooks for one event, so ``hook`` names the function
    (``handlers.gate``, what problems, logs, stats and metrics show) and ``event`` the
    event; ``function`` is the same as ``hook`` (the name problems carried first).
    ``timeout`` is the explicit one (decorator, else manifest) or None for the default.
    ``takes``: the named arguments the function accepts (None: all, ``**kwargs``);
    dispatch passes only those. ``threads``: where a ``def`` hook runs, its plugin's
    executor, set by the registry when it publishes the hook. ``after_commit``:
    delivered through the outbox after the workflow committed, never inside it.
    ``compensation``: how to undo the hook, or None.
    """

    __slots__ = (
        "after_commit",
        "compensation",
        "critical",
        "event",
        "func",
        "function",
        "hook",
        "is_async",
        "plugin",
        "stats",
        "takes",
        "threads",
        "timeout",
    )

    def __init__(
        self, plugin: str, reg: Registration, *, timeout: float | None, critical: bool
    ) -> None:
        self.plugin = plugin
        self.hook = reg.function
        self.event = reg.event
        self.function = reg.function
        self.func = reg.func
        self.is_async = reg.is_async
        self.timeout = timeout
        self.critical = critical
        self.takes = accepted_keywords(reg.func)
        self.after_commit = reg.after_commit
        self.stats = HookStats()
        self.threads: PluginThreads | None = None
        self.compensation = Compensation(reg.undo) if reg.undo is not None else None

    def arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The named arguments of one call this hook accepts (pluggy's rule)."""
        return _accepted(self.takes, kwargs)

    def __repr__(self) -> str:
        return f"<HookEntry {self.plugin}.{self.hook} on {self.event}>"


def _accepted(takes: frozenset[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    if takes is None or takes.issuperset(kwargs):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in takes}


@dataclass(slots=True)
class HookResult:
    """What one hook returned (``value``) and how long it took (``duration``, seconds).

    ``error`` is set only for a non-critical hook that failed without aborting.
    """

    plugin: str
    hook: str
    value: Any
    duration: float
    error: PluginError | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What an after-commit hook receives as ``delivery``.

    ``id`` is the idempotency key: the same for every attempt of this delivery (give it
    to an outside system that deduplicates); ``attempt`` counts from 1.
    """

    id: str
    attempt: int
    event: str
    plugin: str
    hook: str
    kind: str
    created_at: datetime
