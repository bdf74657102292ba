"""Whether an outside component (the database, the object store) answers, logged on change.

During an outage every request fails the same way; one log line when a component stops
answering and one when it answers again say more than a traceback per request. Each
component's boundary (the database clients, the object store) owns one tracker and
reports every call's outcome to it; reporting costs a comparison when nothing changed.

Outcomes are judged by when their call started: a call sent before the last change of
state says nothing new (a request that hung through the outage and timed out after the
component came back must not declare it down again).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""The ``Retry-After`` a client gets with a 503 for an unavailable component."""


class Availability:
    """The last known state of one component, logged once per change."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._down_since: float | None = None
        self._changed = float("-inf")

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, reason: str, started: float) -> None:
        """A call sent at ``started`` (``time.monotonic()``) found the component unavailable."""
        if self._down_since is None and started >= self._changed:
            self._down_since = self._changed = time.monotonic()
            log.warning(
                "%s unavailable",
                self.component,
                extra={"component": self.component, "reason": reason},
            )

    def answered(self, started: float) -> None:
        """A call sent at ``started`` got an answer."""
        if self._down_since is not None and started >= self._changed:
            self._changed = time.monotonic()
            outage = self._changed - self._down_since
            self._down_since = None
            log.warning(
                "%s available again",
                self.component,
                extra={"component": self.component, "outage_seconds": round(outage, 3)},
            )
