"""``emit``'s engine: run one event's hooks concurrently, each under its own deadline.

Semantics (DESIGN.md, "Dispatch semantics"), with TaskGroup's cancellation rules:

- every hook starts at once; sync hooks run in a worker thread;
- a hook raising ``PluginError`` (its own status), running past its deadline
  (``HookTimeout``, 504) or raising anything else (``HookCrashed``, 502) fails the event:
  the hooks still running are cancelled *and awaited* before ``emit`` raises, so no
  sibling keeps writing through the workflow's connection after its rollback;
- several failures raise ``WorkflowAborted`` listing each; a non-critical hook's
  failure is only recorded in its ``HookResult``.

Cost is what the core pays on every workflow, so the hot path is lean: one hook is
awaited in the caller's task under ``asyncio.timeout`` (no task at all); several hooks
get one task each but share a single ``loop.call_at`` deadline handle instead of one
``asyncio.timeout`` per task, and a counter plus one future instead of a TaskGroup.
Hooks are not stepped outside a task (``coro.send(None)``): their first step would run
with ``current_task()`` set to the caller, and an ``asyncio.timeout()`` or TaskGroup the
hook opens there would later cancel the caller instead of the hook.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import CancelledError
from math import inf
from time import perf_counter
from typing import Any, Final

from isp.errors import PluginError
from isp.plugins.compensation import note_acted
from isp.plugins.hooks import HookEntry, HookResult
from isp.plugins.outcomes import aggregate, log_call, settle, succeeded

# A deadline handle may run up to the clock resolution early; treat "almost due" as due.
_TOLERANCE: Final = 1e-3
_WAITING, _RUNNING, _FINISHED = 0, 1, 2


class EventPlan:
    """The enabled hooks of one event with their resolved timeouts; immutable once built."""

    __slots__ = ("hooks", "min_timeout", "timeouts")

    def __init__(self, hooks: tuple[HookEntry, ...], default_timeout: float) -> None:
        self.hooks = hooks
        self.timeouts = tuple(h.timeout or default_timeout for h in hooks)
        self.min_timeout = min(self.timeouts)


async def dispatch_one(
    entry: HookEntry, limit: float, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> HookResult:
    """The fast path: the only hook runs in the caller's task, so nothing else can leak."""
    error: BaseException | None = None
    value: Any = None
    scope = asyncio.timeout(limit)
    start = perf_counter()
    try:
        async with scope:
            if entry.is_async:
                value = await entry.func(*args, **entry.arguments(kwargs))
            else:
                value = await asyncio.to_thread(entry.func, *args, **entry.arguments(kwargs))
    except Exception as exc:  # noqa: BLE001 - every hook failure is classified below
        error = exc
    duration = perf_counter() - start
    if error is None and entry.is_async and not scope.expired():
        if entry.compensation is not None:
            note_acted(entry, limit, event, args, kwargs)
        return succeeded(entry, value, duration)
    result = settle(entry, event, limit, value, error, scope.expired(), duration)
    if entry.compensation is not None and (result.error is None or scope.expired()):
        note_acted(entry, limit, event, args, kwargs)  # it ran: succeeded or timed out
    if result.error is not None and entry.critical:
        raise result.error
    return result


class Emission:
    """The state of one emit to several hooks: their tasks, outcomes and deadlines."""

    __slots__ = (
        "aborting",
        "done",
        "event",
        "expired",
        "failures",
        "fatal",
        "handle",
        "hooks",
        "loop",
        "pending",
        "results",
        "start",
        "state",
        "tasks",
        "timeouts",
    )

    def __init__(self, plan: EventPlan, event: str) -> None:
        count = len(plan.hooks)
        self.loop = asyncio.get_running_loop()
        self.event = event
        self.hooks = plan.hooks
        self.timeouts = plan.timeouts
        self.results: list[HookResult | None] = [None] * count
        self.failures: list[PluginError] = []
        self.state = [_WAITING] * count
        self.expired = [False] * count
        self.pending = count
        self.aborting = False
        self.fatal: BaseException | None = None
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.tasks: list[asyncio.Task[None]] = []
        self.start = self.loop.time()
        self.handle = self.loop.call_at(self.start + plan.min_timeout, self._on_deadline)

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[HookResult]:
        # Tasks start on the next loop iteration, after this method awaited; so does
        # the deadline handle armed in __init__.
        create = self.loop.create_task
        self.tasks = [create(self._hook(i, h, args, kwargs)) for i, h in enumerate(self.hooks)]
        try:
            await self.done
        except CancelledError:
            # Our caller was cancelled: cancel the hooks, wait for them, then propagate.
            self._abort()
            await self._drain()
            raise
        finally:
            self.handle.cancel()
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
                    value = await asyncio.to_thread(entry.func, *args, **entry.arguments(kwargs))
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - classified below; fatal ones re-raised
                error = exc
        duration = perf_counter() - start
        self.state[i] = _FINISHED
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
        if not self.pending and not self.done.done():
            self.done.set_result(None)

    def _abort(self) -> None:
        """Cancel every running hook (once); hooks not yet started will not start."""
        if self.aborting:
            return
        self.aborting = True
        for i, task in enumerate(self.tasks):
            if self.state[i] == _RUNNING:
                task.cancel()

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
            if self.state[i] == _FINISHED or self.expired[i]:
                continue
            deadline = self.start + timeout
            if deadline <= now:
                self.expired[i] = True
                if self.state[i] == _RUNNING:
                    self.tasks[i].cancel()
            elif deadline < upcoming:
                upcoming = deadline
        if upcoming != inf:
            self.handle = self.loop.call_at(upcoming, self._on_deadline)
