"""The hand-off of compensations that failed to a later retry.

:func:`retry_later` is the one call point: the compensation runner calls it once per
aborted workflow with every compensation that failed there. Retrying belongs to the
outbox (deliveries that survive a crash, retried with backoff, ``failed`` after the last
attempt), so this module is where a compensation becomes an outbox row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isp.plugins.compensation import FailedCompensation

log = logging.getLogger("isp.plugins.compensation")


async def retry_later(failures: Sequence[FailedCompensation]) -> None:
    """Keep ``failures`` to be run again later, at least once each.

    Each failure names the plugin, the hook, the compensation function, the event and
    the call's arguments (``failure.acted``). What must be persisted for a retry: plugin,
    event, the compensation's function name and the event object's kind and primary key
    (re-read at retry time), never the arguments themselves (they hold secrets).
    Compensations are idempotent, so running one again after it partly worked is safe.

    The outbox that would persist and retry them is not part of this module yet: for now
    each failure is logged (``compensation not retried``) with what an operator needs to
    undo it by hand, and the problem+json of the aborted workflow lists it.
    """
    for failure in failures:
        item = failure.to_problem()
        log.warning(
            "compensation of %s.%s not retried: %s",
            item["plugin"],
            item["hook"],
            item["reason"],
            extra={**item, "outcome": "not_retried"},
        )
