"""``start_eagerly``: tasks whose first step runs at once, in the task, not a loop turn later.

Dispatch gives every hook a task of its own (a hook awaited in the caller's task could
never be abandoned), but most hooks finish without ever suspending. A task started the
usual way costs two turns of the event loop before the emit resumes (one to run the
hook, one to wake the emit), which made an emit to one no-op hook 3.3 to 4.8 times as
slow as awaiting the hook directly (``tests/bench/dispatch.py``). Started eagerly, a
hook that does not suspend is finished before ``start_eagerly`` returns and the emit
never yields; one that suspends goes on as any task does.

The first step runs with ``asyncio.current_task()`` set to the new task (not the caller):
an ``asyncio.timeout()`` or TaskGroup the hook opens belongs to the hook, and
cancelling the task cancels the hook, exactly as for a task started later.

Python 3.12 has this built in (``asyncio.Task(..., eager_start=True)``). On 3.11 each
task is created as usual and the step it scheduled (the last handle in the loop's ready
queue, checked to be that task's) is taken out and run here; the caller's task is
stepped out of before the first and back into after the last, the way the loop itself
runs a task's step (once per batch: it is what an emit to many hooks pays per hook). A
loop that is not asyncio's own (no ready deque, or a task factory that scheduled
something else) gets an ordinary task: slower, same behaviour.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_BUILT_IN = sys.version_info >= (3, 12)


def start_eagerly(
    loop: asyncio.AbstractEventLoop,
    coros: Iterable[Coroutine[Any, Any, T]],
    into: list[asyncio.Task[T]],
) -> None:
    """A task for each of ``coros`` in turn, appended to ``into`` and stepped at once up
    to its first suspension (or its end) before the next one is made."""
    if _BUILT_IN:  # pragma: no cover - the project's interpreter is 3.11
        for coro in coros:
            eager: asyncio.Task[T] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
            into.append(eager)
        return
    ready = getattr(loop, "_ready", None)
    if type(ready) is not deque:
        into.extend(loop.create_task(coro) for coro in coros)
        return
    plain = loop.get_task_factory() is None  # then the loop would make a plain Task too
    caller = asyncio.current_task(loop)
    if caller is not None:
        asyncio.tasks._leave_task(loop, caller)  # noqa: SLF001 - as the loop does between steps
    try:
        for coro in coros:
            queued = len(ready)
            task = asyncio.Task(coro, loop=loop) if plain else loop.create_task(coro)
            into.append(task)
            if len(ready) == queued + 1 and _steps(ready[-1], task):
                # the task's own step: it enters and leaves the task itself
                ready.pop()._run()  # noqa: SLF001
            # else: not the step we know how to take over; the loop runs it in turn
    finally:
        if caller is not None:
            asyncio.tasks._enter_task(loop, caller)  # noqa: SLF001


def _steps(handle: Any, task: asyncio.Task[Any]) -> bool:
    """Whether the loop's ``handle`` is ``task``'s scheduled step."""
    return getattr(handle._callback, "__self__", None) is task  # noqa: SLF001
