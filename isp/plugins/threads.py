"""``PluginThreads``: the bounded executor of one plugin's ``def`` hooks.

The loop's default executor belongs to the core (file, zip and local object-store work,
``/readyz``'s probes). A ``def`` hook that blocks, say ``time.sleep(120)``, must not take
those threads: each plugin gets ``ISP_PLUGIN_THREADS`` of its own. A thread cannot be
cancelled, so a call that timed out keeps its thread until the function returns; when
every thread is taken, the next call fails at once with ``PluginBusy`` (503, naming the
plugin) instead of queueing behind the stuck ones. A thread still running ``grace``
seconds after its call was cancelled is reported to ``on_overrun`` (the registry then
quarantines the plugin).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"plugin-{plugin}")

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
        self._pool.shutdown(wait=False, cancel_futures=True)

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
