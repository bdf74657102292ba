"""One time budget per hook call, so every step fits inside the hook's own timeout.

The dispatcher cancels a hook at its timeout (the manifest's ``device_backup: 120``); a
cancelled backup loses the export it already fetched and may leave its ``.backup`` on the
router. So the steps do not each get an independent constant (90 s export + 30 s file
wait + 20 s SFTP once added up to more than 120 s): a :class:`Budget` is started when the
hook is entered, and each step's limit is its own cap (a setting) cut to what is left.
A reserve at the end (a fifth of the timeout, at most 10 s) is kept for what must happen
after a failure: removing the ``.backup`` (half of it) and closing the connection (the
other half).
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

RESERVE_SHARE: Final = 0.2
RESERVE_MAX: Final = 10.0
MIN_STEP: Final = 0.05  # a step with nothing left still gets a moment, then times out


class Budget:
    """The deadline of one hook call, on the running loop's clock."""

    __slots__ = ("_deadline", "_loop", "reserve", "total")

    def __init__(self, hook_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.reserve = min(RESERVE_MAX, hook_timeout * RESERVE_SHARE)
        self.total = hook_timeout - self.reserve
        self._deadline = self._loop.time() + self.total

    @classmethod
    def unbounded(cls) -> Budget:
        """No overall deadline: each step gets its cap (sessions opened outside a hook)."""
        return cls(math.inf)

    def left(self) -> float:
        return self._deadline - self._loop.time()

    def limit(self, cap: float) -> float:
        """Seconds a step may take: its cap, cut to what is left of the budget."""
        return max(MIN_STEP, min(cap, self.left()))

    @property
    def cleanup(self) -> float:
        """Seconds for the best-effort removal of a file after a failure."""
        return self.reserve / 2

    @property
    def close(self) -> float:
        """Seconds to wait for the connection to close."""
        return self.reserve / 2
