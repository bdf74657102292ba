"""``PluginThreads``: the bounded executor of one plugin's ``def`` hooks.

The loop's default executor belongs to the core (file, zip and local object-store work,
``/readyz``'s probes). A ``def`` hook that blocks, say ``time.sleep(120)``, must not take
those threads: each plugin gets ``ISP_PLUGIN_THREADS`` of its own. A thread cannot be
cancelled, so a call that timed out keeps its thread until the function returns; when
every thread is taken, the next call fails at once with ``PluginBusy`` (503, naming the
plugin) instead of queueing behind the stuck ones. A thread still running ``grace``
seconds after its call was cancelled is reported to ``on_overrun`` (the registry then
quarantines the plugin).

The threads are daemon threads, unlike ``ThreadPoolExecutor``'s, which the interpreter
joins at exit: a hook stuck in ``time.sleep(120)`` must not hold a shutdown for two
minutes.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from isp.errors import PluginBusy


class PluginThreads:
    """One plugin's threads; ``run`` is called on the event loop only."""

    def __init__(
        self,
        plugin: str,
        size: int,
        *,
        grace: Callable[[], float],
        on_overrun: Callable[[str, str], None],
    ) -> None:
        self.plugin = plugin
        self.size = size
        self._grace = grace
        self._on_overrun = on_overrun
        self._slots = threading.BoundedSemaphore(size)
        self._pool = _DaemonPool(f"plugin-{plugin}", size)

    async def run(
        self, hook: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``func(*args, **kwargs)`` in one of the plugin's threads, in this context."""
        if not self._slots.acquire(blocking=False):
            raise PluginBusy(
                f"plugin {self.plugin}: all {self.size} of its threads still run 'def' hooks "
                "that have not returned (ISP_PLUGIN_THREADS); try again later",
                plugin=self.plugin,
                hook=hook,
                threads=self.size,
            )
        context = contextvars.copy_context()  # the hook sees the app's registry and settings
        try:
            future = self._pool.submit(context.run, func, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.done():
                self._watch(hook, future)
            raise

    def busy(self) -> int:
        """Threads running a hook now."""
        return self.size - self._slots._value  # noqa: SLF001 - no public counter exists

    def shutdown(self) -> None:
        """Stop taking calls; running threads finish on their own (they cannot be stopped)."""
        self._pool.shutdown()

    def _release(self, _future: Future[Any]) -> None:
        self._slots.release()

    def _watch(self, hook: str, future: Future[Any]) -> None:
        grace = self._grace()

        def check() -> None:
            if not future.done():
                self._on_overrun(
                    self.plugin,
                    f"hook {self.plugin}.{hook} (a 'def' hook) was still running {grace:g} s "
                    "after it was cancelled",
                )

        asyncio.get_running_loop().call_later(grace, check)


_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _DaemonPool:
    """Up to ``size`` daemon threads, started when work finds none idle."""

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._numbers = itertools.count(1)
        self._closed = False

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError(f"{self._name}: the executor is shut down")
        future: Future[Any] = Future()
        self._work.put((future, func, args, kwargs))
        with self._lock:
            if self._idle == 0 and self._threads < self._size:
                self._threads += 1
                name = f"{self._name}-{next(self._numbers)}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        return future

    def shutdown(self) -> None:
        self._closed = True
        with self._lock:
            for _ in range(self._threads):
                self._work.put(None)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._work.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            future, func, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting hook call
                future.set_exception(exc)
            else:
                future.set_result(result)
