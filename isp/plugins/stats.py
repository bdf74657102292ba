"""Per-hook counters, latency percentiles and a latency histogram, kept by the dispatcher.

Only the event loop thread writes them (sync hooks report back on the loop), so plain
integer fields suffice. The latency reservoir is bounded: the last ``RESERVOIR``
durations, enough for a stable p95 without growing with traffic. The cumulative
histogram (``BUCKETS``, Prometheus' default bounds) is what ``/metrics`` exports: this
is the one place hook calls are counted.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import Any, Final

RESERVOIR: Final = 1024
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class HookStats:
    """Calls, failures and timeouts of one hook, and its recent durations (seconds)."""

    __slots__ = ("bucket_counts", "calls", "duration_sum", "durations", "failures", "timeouts")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        self.durations: deque[float] = deque(maxlen=RESERVOIR)
        self.bucket_counts = [0] * (len(BUCKETS) + 1)  # per bucket, the last one is +Inf
        self.duration_sum = 0.0

    def ok(self, duration: float) -> None:
        self.calls += 1
        self._observe(duration)

    def failed(self, duration: float, *, timeout: bool = False) -> None:
        self.calls += 1
        self.failures += 1
        if timeout:
            self.timeouts += 1
        self._observe(duration)

    def _observe(self, duration: float) -> None:
        self.durations.append(duration)
        self.bucket_counts[bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """``(upper bound, calls at or below it)`` pairs, Prometheus style, ``+Inf`` last."""
        total, pairs = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.bucket_counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs

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
