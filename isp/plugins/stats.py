"""Per-hook counters and latency percentiles, kept in memory by the dispatcher.

Only the event loop thread writes them (sync hooks report back on the loop), so plain
integer fields suffice. The latency reservoir is bounded: the last ``RESERVOIR``
durations, enough for a stable p95 without growing with traffic.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

RESERVOIR: Final = 1024


class HookStats:
    """Calls, failures and timeouts of one hook, and its recent durations (seconds)."""

    __slots__ = ("calls", "durations", "failures", "timeouts")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        self.durations: deque[float] = deque(maxlen=RESERVOIR)

    def ok(self, duration: float) -> None:
        self.calls += 1
        self.durations.append(duration)

    def failed(self, duration: float, *, timeout: bool = False) -> None:
        self.calls += 1
        self.failures += 1
        if timeout:
            self.timeouts += 1
        self.durations.append(duration)

    def snapshot(self) -> dict[str, Any]:
        """Counters and p50/p95 in milliseconds (None before the first call)."""
        ordered = sorted(self.durations)
        return {
            "calls": self.calls,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "p50_ms": _percentile_ms(ordered, 0.50),
            "p95_ms": _percentile_ms(ordered, 0.95),
        }


def _percentile_ms(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile: a duration that was actually observed."""
    if not ordered:
        return None
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1
    return round(ordered[rank] * 1000, 3)
