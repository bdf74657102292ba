"""``emit``'s engine: run one event's hooks concurrently, each under its own deadline.

Semantics (DESIGN.md, "Dispatch semantics"), with TaskGroup's cancellation rules:

- every hook starts at once; sync hooks run in their plugin's own bounded threads
  (:mod:`isp.plugins.threads`), never in the core's default executor;
- a hook raising ``PluginError`` (its own status), running past its deadline
  (``HookTimeout``, 504) or raising anything else (``HookCrashed``, 502) fails the event:
  the hooks still running are cancelled *and awaited* before ``emit`` raises, so no
  sibling keeps writing through the workflow's connection after its rollback;
- the one exception to "awaited": a hook still running ``grace`` seconds
  (``ISP_HOOK_GRACE``) after its cancellation has swallowed it. Waiting for it would hand
  the event loop's workflow, transaction and connection to the plugin, so it is
  *abandoned* (:mod:`isp.plugins.watchdog`): its task is detached and tracked, the event
  fails with ``HookAbandoned`` (504) even for a non-critical hook, the connection passed
  as ``db`` is discarded before ``emit`` raises, and ``on_abandon`` quarantines the plugin;
- several failures raise ``WorkflowAborted`` listing each; a non-critical hook's
  failure is only recorded in its ``HookResult``.

Cost is what the core pays on every workflow, so the path is lean: one task per hook
(a hook awaited in the caller's own task could never be abandoned), started eagerly
(:mod:`isp.plugins.eager`: its first step runs at once, inside its own task, so a hook
that never suspends costs no turn of the event loop), a single ``loop.call_at`` deadline
handle for all of them, armed only when a hook is still running after its first step,
instead of one ``asyncio.timeout`` per task, and a counter plus one future instead of a
TaskGroup. Hooks are not stepped outside a task (``coro.send(None)``): their first step
would run with ``current_task()`` set to the caller, and an ``asyncio.timeout()`` or
TaskGroup the hook opens there would later cancel the caller instead of the hook.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import CancelledError
from collections.abc import Callable
from math import inf
from time import perf_counter
from typing import Any, Final

from isp.errors import PluginError
from isp.plugins.compensation import note_acted
from isp.plugins.eager import start_eagerly
from isp.plugins.hooks import HookEntry, HookResult
from isp.plugins.outcomes import abandoned, aggregate, log_call, settle, succeeded
from isp.plugins.watchdog import Watchdog, discard_connection

# A deadline handle may run up to the clock resolution early; treat "almost due" as due.
_TOLERANCE: Final = 1e-3
_WAITING, _RUNNING, _FINISHED, _ABANDONED = 0, 1, 2, 3

OnAbandon = Callable[[HookEntry, str], None]
"""Told (plugin's entry, reason) when a hook is abandoned: the registry quarantines."""


class EventPlan:
    """The hooks of one event with their resolved timeouts; immutable once built.

    ``hooks`` are those to call; ``held`` those of quarantined plugins, each with the
    reason, which fail without being called.
    """

    __slots__ = ("grace", "held", "hooks", "min_timeout", "timeouts")

    def __init__(
        self,
        hooks: tuple[HookEntry, ...],
        default_timeout: float,
        grace: float = 1.0,
        held: tuple[tuple[HookEntry, str], ...] = (),
    ) -> None:
        self.hooks = hooks
        self.held = held
        self.grace = grace
        self.timeouts = tuple(h.timeout or default_timeout for h in hooks)
        self.min_timeout = min(self.timeouts, default=default_timeout)


class Emission:
    """The state of one emit to several hooks: their tasks, outcomes and deadlines."""

    __slots__ = (
        "aborting",
        "abandoned",
        "done",
        "event",
        "expired",
        "failures",
        "fatal",
        "grace",
        "graces",
        "handle",
        "hooks",
        "loop",
        "min_timeout",
        "on_abandon",
        "pending",
        "results",
        "start",
        "state",
        "tasks",
        "timeouts",
        "watchdog",
    )

    def __init__(
        self,
        plan: EventPlan,
        event: str,
        watchdog: Watchdog | None = None,
        on_abandon: OnAbandon | None = None,
    ) -> None:
        count = len(plan.hooks)
        self.loop = asyncio.get_running_loop()
        self.event = event
        self.hooks = plan.hooks
        self.timeouts = plan.timeouts
        self.grace = plan.grace
        self.graces: list[asyncio.TimerHandle | None] = [None] * count
        self.watchdog = watchdog or Watchdog()
        self.on_abandon = on_abandon
        self.abandoned = False
        self.results: list[HookResult | None] = [None] * count
        self.failures: list[PluginError] = []
        self.state = [_WAITING] * count
        self.expired = [False] * count
        self.pending = count
        self.aborting = False
        self.fatal: BaseException | None = None
        self.done: asyncio.Future[None] | None = None  # made only if the emit must wait
        self.tasks: list[asyncio.Task[None]] = []
        self.start = self.loop.time()
        self.min_timeout = plan.min_timeout
        self.handle: asyncio.TimerHandle | None = None

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[HookResult]:
        # Each hook's task runs its first step at once (isp.plugins.eager): a hook that
        # does not suspend is finished before the next one starts, and if none suspends
        # the emit never yields. Deadlines count from the emit's start; the handle is
        # armed only if a hook is still running.
        loop, hook = self.loop, self._hook
        hooks = [hook(i, entry, args, kwargs) for i, entry in enumerate(self.hooks)]
        start_eagerly(loop, hooks, self.tasks)
        if self.pending:
            self.done = loop.create_future()
            self.handle = loop.call_at(self.start + self.min_timeout, self._on_deadline)
            try:
                await self.done
            except CancelledError:
                # Our caller was cancelled: cancel the hooks, wait for them, then propagate.
                self._abort()
                await self._drain()
                await self._discard(kwargs)
                raise
            finally:
                self.handle.cancel()
        await self._discard(kwargs)
        if self.fatal is not None:
            raise self.fatal
        if self.failures:
            raise aggregate(self.failures, self.event)
        return self.results  # type: ignore[return-value]  # every slot is filled by now

    async def _hook(
        self, i: int, entry: HookEntry, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if self.aborting:  # a sibling failed before this hook's task got to start
            self._finished()
            return
        self.state[i] = _RUNNING
        error: BaseException | None = None
        value: Any = None
        start = perf_counter()
        called = not self.expired[i]
        if called:
            try:
                if entry.is_async:
                    value = await entry.func(*args, **entry.arguments(kwargs))
                else:
                    threads = entry.threads
                    assert threads is not None, "the registry gives every published hook threads"
                    value = await threads.run(entry.hook, entry.func, args, entry.arguments(kwargs))
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - classified below; fatal ones re-raised
                error = exc
        duration = perf_counter() - start
        if self.state[i] == _ABANDONED:  # the emit answered long ago; only say it ended
            log_call(logging.WARNING, entry, "abandoned hook ended", duration)
            return
        self.state[i] = _FINISHED
        grace = self.graces[i]
        if grace is not None:
            grace.cancel()
        if called and entry.compensation is not None:
            self._note_acted(i, entry, error, args, kwargs)
        if error is None and entry.is_async and not self.expired[i]:
            self.results[i] = succeeded(entry, value, duration)
            self._finished()
            return
        try:
            if isinstance(error, KeyboardInterrupt | SystemExit):  # run() re-raises, as TaskGroup
                self.fatal = self.fatal or error
                self._abort()
            elif self.aborting and not self.expired[i] and isinstance(error, CancelledError):
                log_call(logging.INFO, entry, "cancelled", duration)  # a sibling failed first
            else:
                self._record(i, entry, value, error, duration)
        finally:
            self._finished()

    def _note_acted(
        self,
        i: int,
        entry: HookEntry,
        error: BaseException | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """A hook that was called acted unless it refused or crashed on its own: it
        returned, or was cancelled (its deadline, or a sibling's failure)."""
        if error is None or self.expired[i] or isinstance(error, CancelledError):
            note_acted(entry, self.timeouts[i], self.event, args, kwargs)

    def _record(
        self, i: int, entry: HookEntry, value: Any, error: BaseException | None, duration: float
    ) -> None:
        result = settle(
            entry, self.event, self.timeouts[i], value, error, self.expired[i], duration
        )
        if result.error is not None and entry.critical:
            self.failures.append(result.error)
            self._abort()
        else:
            self.results[i] = result

    def _finished(self) -> None:
        self.pending -= 1
        if not self.pending and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _abort(self) -> None:
        """Cancel every running hook (once); hooks not yet started will not start."""
        if self.aborting:
            return
        self.aborting = True
        for i in range(len(self.tasks)):  # hooks not started yet have no task
            if self.state[i] == _RUNNING:
                self._cancel(i)

    def _cancel(self, i: int) -> None:
        """Cancel hook ``i``; give it ``grace`` seconds to end before it is abandoned."""
        self.tasks[i].cancel()
        if self.graces[i] is None:
            self.graces[i] = self.loop.call_later(self.grace, self._on_grace, i)

    def _on_grace(self, i: int) -> None:
        """Hook ``i`` ignored its cancellation: detach it and fail the event without it."""
        if self.state[i] != _RUNNING:
            return
        self.state[i] = _ABANDONED
        self.abandoned = True
        entry = self.hooks[i]
        self.watchdog.detach(self.tasks[i])
        result = abandoned(entry, self.event, self.timeouts[i], self.grace)
        assert result.error is not None
        try:
            if self.on_abandon is not None:
                self.on_abandon(entry, str(result.error.extra.get("quarantined")))
            # fatal even for a non-critical hook: the connection it holds is discarded,
            # so the workflow's transaction cannot commit
            self.failures.append(result.error)
            self._abort()
        finally:
            self._finished()

    async def _discard(self, kwargs: dict[str, Any]) -> None:
        """After an abandonment: the connection the abandoned hook holds is never reused."""
        if self.abandoned:
            await discard_connection(kwargs.get("db"))

    async def _drain(self) -> None:
        """Wait until every hook finished, even if our caller is cancelled again meanwhile."""
        while self.pending:
            self.done = self.loop.create_future()
            try:
                await self.done
            except CancelledError:
                continue

    def _on_deadline(self) -> None:
        """Cancel the hooks whose deadline passed; re-arm for the next deadline."""
        now = self.loop.time() + _TOLERANCE
        upcoming = inf
        for i, timeout in enumerate(self.timeouts):
            if self.state[i] >= _FINISHED or self.expired[i]:  # finished or abandoned
                continue
            deadline = self.start + timeout
            if deadline <= now:
                self.expired[i] = True
                if self.state[i] == _RUNNING:
                    self._cancel(i)
            elif deadline < upcoming:
                upcoming = deadline
        if upcoming != inf:
            self.handle = self.loop.call_at(upcoming, self._on_deadline)
