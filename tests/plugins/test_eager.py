"""start_eagerly: a task's first step runs at once, inside the task, with the task's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

from isp.plugins.eager import start_eagerly


def started(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    tasks: list[asyncio.Task[Any]] = []
    start_eagerly(loop, [coro], tasks)
    return tasks[0]


async def test_a_coroutine_that_never_suspends_is_done_on_return_and_ran_in_its_own_task() -> None:
    loop = asyncio.get_running_loop()
    caller = asyncio.current_task()
    seen: list[asyncio.Task[Any] | None] = []

    async def body() -> str:
        seen.append(asyncio.current_task())
        return "done"

    task = started(loop, body())
    assert task.done()
    assert task.result() == "done"
    assert seen == [task]
    assert asyncio.current_task() is caller  # the caller is its loop's current task again


async def test_a_coroutine_that_suspends_goes_on_as_a_task_and_is_cancelled_as_one() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []
    release = asyncio.Event()

    async def body() -> None:
        steps.append("first")
        try:
            await release.wait()
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    task = started(loop, body())
    assert steps == ["first"]
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["first", "cancelled"]


async def test_a_timeout_opened_in_the_first_step_cancels_the_task_not_the_caller() -> None:
    loop = asyncio.get_running_loop()

    async def body() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out alone"
        return "slept"

    task = started(loop, body())
    assert await task == "timed out alone"
    assert asyncio.current_task() is not None
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_a_loop_whose_task_factory_schedules_otherwise_gets_an_ordinary_task() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any]
    ) -> asyncio.Task[Any]:
        loop.call_soon(ran.append, "factory's own callback")
        return asyncio.Task(coro, loop=loop)

    async def body() -> None:
        ran.append("body")

    loop.set_task_factory(factory)
    try:
        task = started(loop, body())
        assert not task.done()  # not taken over: the loop runs it, in order
        await task
    finally:
        loop.set_task_factory(None)
    assert ran == ["factory's own callback", "body"]


async def test_several_start_in_turn_each_in_its_own_task_and_the_caller_is_current_after() -> None:
    loop = asyncio.get_running_loop()
    caller = asyncio.current_task()
    seen: list[tuple[str, asyncio.Task[Any] | None]] = []
    release = asyncio.Event()

    async def body(name: str, wait: bool) -> str:
        seen.append((name, asyncio.current_task()))
        if wait:
            await release.wait()
        return name

    tasks: list[asyncio.Task[str]] = []
    start_eagerly(loop, (body(name, name == "b") for name in "abc"), tasks)
    assert asyncio.current_task() is caller
    assert seen == [("a", tasks[0]), ("b", tasks[1]), ("c", tasks[2])]
    assert [t.done() for t in tasks] == [True, False, True]
    release.set()
    assert await asyncio.gather(*tasks) == ["a", "b", "c"]
