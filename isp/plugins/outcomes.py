"""How one hook call ended: counted, logged, and turned into the error the API shows.

Every finished call goes through here exactly once: ``succeeded`` on the hot path,
``settle`` otherwise. A failure becomes a ``PluginError`` carrying ``plugin``, ``hook``
(the function, ``handlers.gate``), ``event``, ``function`` (the same as ``hook``) and
``detail`` in ``extra`` (rendered into problem+json): the hook's own
``PluginError`` (its status, 422 by default), ``HookTimeout`` (504) or ``HookCrashed``
(502, traceback logged). A hook that ignored its cancellation past the grace is
``abandoned`` (``HookAbandoned``, 504); one of a quarantined plugin is ``held``
(``PluginQuarantined``, 503) without running. Several critical failures aggregate into
``WorkflowAborted``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from isp.errors import (
    HookAbandoned,
    HookCrashed,
    HookTimeout,
    PluginError,
    PluginQuarantined,
    WorkflowAborted,
    hook_fields,
)
from isp.plugins.hooks import HookEntry, HookResult

log = logging.getLogger("isp.plugins.dispatch")


def succeeded(entry: HookEntry, value: Any, duration: float) -> HookResult:
    """The hot path: an async hook that returned in time."""
    entry.stats.ok(duration)
    if log.isEnabledFor(logging.INFO):
        log_call(logging.INFO, entry, "ok", duration)
    return HookResult(entry.plugin, entry.hook, value, duration)


def settle(
    entry: HookEntry,
    event: str,
    timeout: float,
    value: Any,
    error: BaseException | None,
    expired: bool,
    duration: float,
) -> HookResult:
    """Classify one finished call, count it, log it; a failure goes in ``result.error``."""
    if error is None and not expired:
        if not inspect.isawaitable(value):
            return succeeded(entry, value, duration)
        if inspect.iscoroutine(value):
            value.close()
        error = TypeError("a sync hook returned an awaitable: declare it 'async def'")
    failure = failure_of(entry, event, timeout, error, expired)
    entry.stats.failed(duration, timeout=expired)
    if isinstance(failure, HookCrashed):
        log_call(logging.ERROR, entry, "crashed", duration, failure.detail, error)
    else:
        outcome = "timeout" if expired else "refused"
        log_call(logging.WARNING, entry, outcome, duration, failure.detail)
    return HookResult(entry.plugin, entry.hook, None, duration, failure)


def failure_of(
    entry: HookEntry, event: str, timeout: float, error: BaseException | None, expired: bool
) -> PluginError:
    """The error that names plugin, hook and why; ``extra`` feeds the problem+json."""
    failure: PluginError
    if expired:
        detail = f"hook {entry.plugin}.{entry.hook} on {event} did not finish within {timeout:g} s"
        failure = HookTimeout(detail, timeout=timeout)
    elif isinstance(error, PluginError):
        failure = error  # the plugin's own status and message; fill in what it left out
    else:
        detail = (
            f"hook {entry.plugin}.{entry.hook} on {event} crashed: {type(error).__name__}: {error}"
        )
        failure = HookCrashed(detail[:500])
        failure.__cause__ = error
    _identify(failure, entry, event)
    return failure


def _identify(failure: PluginError, entry: HookEntry, event: str) -> None:
    for key, value in hook_fields(entry.plugin, entry.hook, event).items():
        failure.extra.setdefault(key, value)
    failure.extra.setdefault("detail", failure.detail)


def abandoned(entry: HookEntry, event: str, timeout: float, grace: float) -> HookResult:
    """A hook still running ``grace`` seconds after its cancellation: counted, logged, and
    a ``HookAbandoned`` whose ``quarantined`` says why its plugin is quarantined."""
    reason = (
        f"hook {entry.plugin}.{entry.hook} on {event} ignored its cancellation: still "
        f"running {grace:g} s after it was cancelled (timeout {timeout:g} s)"
    )
    failure = HookAbandoned(
        f"{reason}; the workflow was rolled back and plugin {entry.plugin} quarantined",
        timeout=timeout,
        quarantined=reason,
    )
    _identify(failure, entry, event)
    entry.stats.failed(timeout + grace, timeout=True)
    log_call(logging.ERROR, entry, "abandoned", timeout + grace, failure.detail)
    return HookResult(entry.plugin, entry.hook, None, timeout + grace, failure)


def held(entry: HookEntry, event: str, reason: str) -> HookResult:
    """A hook of a quarantined plugin, not called: it fails fast, never silently skipped."""
    failure = PluginQuarantined(
        f"plugin {entry.plugin} is quarantined ({reason}); an admin enables it again with "
        f"PUT /plugins/{entry.plugin}/enable",
        quarantined=reason,
    )
    _identify(failure, entry, event)
    entry.stats.failed(0.0)
    log_call(logging.WARNING, entry, "quarantined", 0.0, failure.detail)
    return HookResult(entry.plugin, entry.hook, None, 0.0, failure)


def aggregate(failures: list[PluginError], event: str) -> PluginError:
    """One failure as is; several as ``WorkflowAborted`` with the first one's status."""
    first = failures[0]
    if len(failures) == 1:
        return first
    items = [
        {
            **hook_fields(f.plugin, f.hook, event),
            "status": f.status_code,
            "detail": f.detail,
        }
        for f in failures
    ]
    summary = "; ".join(f"{f.plugin}.{f.hook}: {f.detail}" for f in failures)
    aborted = WorkflowAborted(
        f"{len(failures)} hooks failed on {event}: {summary}",
        status=first.status_code,
        failures=items,
        **hook_fields(first.plugin, first.hook, event),
    )
    aborted.__cause__ = first
    return aborted


def log_call(
    level: int,
    entry: HookEntry,
    outcome: str,
    duration: float,
    detail: str = "",
    error: BaseException | None = None,
) -> None:
    """One line per hook call; never the hook's arguments, which may carry secrets."""
    if not log.isEnabledFor(level):
        return
    duration_ms = round(duration * 1000, 3)
    log.log(
        level,
        "hook %s.%s %s in %.1f ms%s",
        entry.plugin,
        entry.hook,
        outcome,
        duration_ms,
        f": {detail}" if detail else "",
        exc_info=error,
        extra={
            **hook_fields(entry.plugin, entry.hook, entry.event),
            "duration_ms": duration_ms,
            "outcome": outcome,
        },
    )
