"""Compensations that failed, retried later through the outbox.

:func:`retry_later` is the one call point: the compensation runner calls it once per
aborted workflow with every compensation that failed there. Each becomes an outbox row
of kind ``compensation`` (:mod:`isp.plugins.outbox`): written at once (the workflow's
transaction is gone), delivered at least once by any instance, retried with backoff,
kept ``failed`` with its error after the last attempt, visible in ``GET /outbox`` and
retried by hand with ``POST /outbox/{id}/retry``. :func:`install` tells the outbox how
to deliver such a row: the hook's compensation, found again by plugin, event and
function, called with the reloaded object and the stored arguments, ``db`` the plain
connection, under the hook's timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tortoise.connection import get_connection

from isp.errors import PluginError
from isp.plugins import outbox
from isp.plugins.compensation import Acted, FailedCompensation, undo_once
from isp.plugins.hooks import HookEntry
from isp.plugins.registry import PluginRegistry

log = logging.getLogger("isp.plugins.compensation")


async def retry_later(failures: Sequence[FailedCompensation]) -> None:
    """Write one outbox row per failed compensation, to be run again later.

    A row holds references, never values: the plugin, the event, the hook's function
    name, the event's object by model and primary key (reloaded at each attempt) and
    the other arguments as JSON; never ``db``, never a secret. Compensations are
    idempotent, so running one again after it partly worked is safe. A failure that
    cannot be written (the object was never saved, the database is gone) is logged
    with what an operator needs to undo it by hand; it never replaces the workflow's
    error.
    """
    for failure in failures:
        acted = failure.acted
        subject = acted.args[0] if acted.args else None
        try:
            row = await outbox.enqueue(
                outbox.COMPENSATION,
                event=acted.event,
                plugin=acted.entry.plugin,
                hook=acted.entry.function,
                subject=subject,
                args=acted.kwargs,
            )
        except Exception:  # noqa: BLE001 - reported below, never raised
            item = failure.to_problem()
            log.exception(
                "compensation of %s.%s cannot be retried; undo it by hand: %s",
                item["plugin"],
                item["hook"],
                item["reason"],
                extra={**item, "outcome": "not_retried"},
            )
            continue
        log.info(
            "compensation of %s.%s queued for retry (outbox row %s)",
            acted.entry.plugin,
            acted.entry.function,
            row.id,
            extra={**failure.to_problem(), "outbox_id": row.id, "outcome": "queued"},
        )


def compensated_hook(
    registry: PluginRegistry, plugin: str, event: str, function: str
) -> HookEntry | None:
    """The published hook of ``plugin`` named ``function`` for ``event`` with a
    compensation (enabled or not: undoing stays owed when a plugin is disabled)."""
    for entry in registry.entries(plugin):
        if entry.event == event and entry.function == function and entry.compensation:
            return entry
    return None


async def _run_compensation(call: outbox.DeliveryCall) -> None:
    row = call.row
    entry = compensated_hook(call.registry, row.plugin, row.event, row.hook)
    if entry is None:
        raise outbox.DeliveryImpossible(
            f"plugin {row.plugin!r} has no hook {row.hook} with a compensation for {row.event}"
        )
    acted = Acted(entry, call.registry.timeout_of(entry), row.event, (call.subject,), call.args)
    failure = await undo_once(acted, get_connection("default"))
    if failure is not None:  # a failed attempt: the outbox retries it with backoff
        raise PluginError(failure.reason, plugin=row.plugin, hook=row.hook, event=row.event)


def install() -> None:
    """Let the outbox deliver ``compensation`` rows (once per process, idempotent)."""
    outbox.register_kind(outbox.COMPENSATION, _run_compensation)
