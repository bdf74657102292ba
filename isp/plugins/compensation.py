"""Compensation: undo what hooks did outside the database when their workflow aborts.

A rollback undoes a hook's rows, not the secret it created on a router. A hook may
declare how to undo itself (``@provision.compensate``). A workflow runs inside
:func:`compensating`; while it does, dispatch notes every hook with a compensation that
*acted*: it succeeded, or it was cancelled after it started (a sibling failed first, or
its own deadline passed). A hook that refused or crashed is not compensated: it knows
what it left half-done and undoes that before raising.

When the workflow aborts (a hook failed, or the commit itself did), the transaction has
rolled back by the time the compensations run; they run concurrently, each under its
hook's timeout, before the error goes on to be answered. They get the hook's arguments,
except ``db``: the plain connection (no transaction; what a compensation writes commits
at once). A compensation that fails is logged, listed in the error's problem+json as
``compensation_failures`` and handed to :func:`isp.plugins.compensation_retry.retry_later`.
The workflow's error stays the original one. Compensations must be idempotent: a retry
may run one again after it partly worked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from isp.errors import ISPError, PluginError
from isp.plugins.hooks import Compensation, HookEntry

log = logging.getLogger("isp.plugins.compensation")

_ACTED: ContextVar[list[Acted] | None] = ContextVar("isp_compensable_hooks", default=None)


@dataclass(frozen=True, slots=True)
class Acted:
    """One hook call that acted, with what is needed to undo it."""

    entry: HookEntry
    timeout: float
    event: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def compensation(self) -> Compensation:
        assert self.entry.compensation is not None  # only such hooks are noted
        return self.entry.compensation


@dataclass(frozen=True, slots=True)
class FailedCompensation:
    """A compensation that did not finish: the call to retry and why it failed."""

    acted: Acted
    reason: str

    def to_problem(self) -> dict[str, str]:
        """One item of ``compensation_failures``: never the arguments (they hold secrets)."""
        entry = self.acted.entry
        return {
            "plugin": entry.plugin,
            "hook": entry.function,
            "compensation": self.acted.compensation.function,
            "event": self.acted.event,
            "reason": self.reason,
        }


def note_acted(
    entry: HookEntry, timeout: float, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Dispatch calls this for a hook with a compensation that acted; outside a
    workflow's :func:`compensating` block it is a no-op."""
    acted = _ACTED.get()
    if acted is not None:
        acted.append(Acted(entry, timeout, event, args, kwargs))


@asynccontextmanager
async def compensating(db: Any) -> AsyncIterator[None]:
    """Compensate the hooks that acted inside the block if it raises.

    Wrap the whole transaction, commit included, so compensations run after the
    rollback; ``db`` is the connection compensations receive (the plain one).
    """
    acted: list[Acted] = []
    token = _ACTED.set(acted)
    try:
        yield
    except Exception as exc:
        _ACTED.reset(token)  # what compensations emit is not noted here
        if acted:
            await compensate(acted, db, exc)
        raise
    except BaseException:
        _ACTED.reset(token)
        raise
    else:
        _ACTED.reset(token)


async def compensate(acted: Sequence[Acted], db: Any, error: BaseException) -> None:
    """Run every compensation at once; report the failed ones on ``error`` and hand them
    over for a later retry. Never raises for a compensation's failure."""
    outcomes = await asyncio.gather(*(undo_once(call, db) for call in acted))
    failures = [failure for failure in outcomes if failure is not None]
    if not failures:
        return
    if isinstance(error, ISPError):
        listed = error.extra.setdefault("compensation_failures", [])
        listed.extend(failure.to_problem() for failure in failures)
    # Imported here: the retry module reaches the outbox, which imports dispatch, which
    # imports this module.
    from isp.plugins.compensation_retry import retry_later

    await retry_later(failures)


async def undo_once(call: Acted, db: Any) -> FailedCompensation | None:
    """One compensation under its hook's timeout; counted and logged, never raised."""
    undo = call.compensation
    kwargs = undo.arguments({**call.kwargs, "db": db})
    reason: str | None = None
    outcome = "ok"
    caught: BaseException | None = None
    start = perf_counter()
    scope = asyncio.timeout(call.timeout)
    try:
        async with scope:
            if undo.is_async:
                value = await undo.func(*call.args, **kwargs)
            else:
                value = await asyncio.to_thread(undo.func, *call.args, **kwargs)
                if inspect.iscoroutine(value):
                    value.close()
                    outcome = "crashed"
                    reason = "a sync compensation returned an awaitable: declare it 'async def'"
    except TimeoutError as exc:
        if scope.expired():
            outcome, reason = "timeout", f"did not finish within {call.timeout:g} s"
        else:
            outcome, reason, caught = "crashed", f"{type(exc).__name__}: {exc}", exc
    except PluginError as exc:
        outcome, reason = "refused", exc.detail
    except Exception as exc:  # noqa: BLE001 - a failed compensation is reported, not raised
        outcome, reason, caught = "crashed", f"{type(exc).__name__}: {exc}"[:500], exc
    duration = perf_counter() - start
    if reason is None:
        undo.stats.ok(duration)
    else:
        undo.stats.failed(duration, timeout=outcome == "timeout")
    _log(call, outcome, duration, reason, caught)
    return None if reason is None else FailedCompensation(call, reason)


def _log(
    call: Acted, outcome: str, duration: float, reason: str | None, error: BaseException | None
) -> None:
    """One line per compensation call, as for hooks; never the arguments."""
    entry = call.entry
    duration_ms = round(duration * 1000, 3)
    level = logging.INFO if reason is None else logging.ERROR
    log.log(
        level,
        "compensation of %s.%s %s in %.1f ms%s",
        entry.plugin,
        entry.hook,
        outcome,
        duration_ms,
        f": {reason}" if reason else "",
        exc_info=error,
        extra={
            "plugin": entry.plugin,
            "hook": entry.hook,
            "event": call.event,
            "function": entry.function,
            "compensation": call.compensation.function,
            "duration_ms": duration_ms,
            "outcome": outcome,
        },
    )
