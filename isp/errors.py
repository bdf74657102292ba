"""One exception hierarchy for the whole service, rendered as RFC 9457 problem+json.

::

    ISPError                      500  base; carries status, title, detail, extra fields
    ├── ConfigError               500  bad ISP_* setting (raised before serving)
    ├── BadRequest                400
    ├── Unauthorized              401  missing or invalid token
    ├── Forbidden                 403  missing scope or permission
    ├── NotFound                  404
    ├── MethodNotAllowed          405
    ├── Conflict                  409
    │   └── IllegalTransition     409  a service status move the state machine refuses
    ├── PayloadTooLarge           413
    ├── ValidationFailed          422  carries ``errors``: [{"loc": [...], "msg": ...}]
    │                                  (the first :data:`MAX_LISTED`, and ``error_count``)
    │   └── PluginInvalid         422  a plugin's manifest or code failed validation
    ├── StorageError              503  the object store failed, hung or is misconfigured
    │   └── BucketMissing         503  a configured bucket does not exist
    ├── DatabaseUnavailable       503  the database failed, hung or refused a connection
    │   └── CommitFailed          503  a workflow's commit failed (its changes are gone)
    └── PluginError               422  raised by a plugin hook to abort a workflow
        ├── HookTimeout           504  a hook ran past its timeout
        │   └── HookAbandoned     504  ... and past the grace: left running, plugin quarantined
        ├── HookCrashed           502  a hook raised something that is not a PluginError
        ├── PluginQuarantined     503  a quarantined plugin's critical hook (until enabled)
        ├── PluginBusy            503  every thread of the plugin's executor is taken
        └── WorkflowAborted       *    several hooks failed; carries every failure

Library errors (Tortoise, botocore, asyncssh) are translated into these at exactly one
boundary each, with ``raise ... from exc``. The two 503s name their ``component``
(``database`` / ``object_store``) and are answered with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

MAX_LISTED: Final = 20
"""A problem lists at most this many ``errors``; ``error_count`` says how many there were."""


class ISPError(Exception):
    """Base of every error the service raises on purpose.

    ``extra`` holds problem+json extension members (``plugin``, ``hook``, ``errors``...).
    """

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type_slug: ClassVar[str] = "internal"
    component: ClassVar[str | None] = None
    """The outside component that failed, named in the problem (503s of a dependency)."""

    def __init__(self, detail: str = "", *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra: dict[str, Any] = extra
        if status is not None:
            self.status_code = status
        else:
            self.status_code = type(self).status

    def to_problem(self) -> dict[str, Any]:
        """The problem+json document for this error."""
        problem: dict[str, Any] = {
            "type": f"https://isp-framework.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        if self.component is not None:
            problem["component"] = self.component
        for key, value in self.extra.items():
            if key not in problem:
                problem[key] = value
        return problem


class ConfigError(ISPError):
    title = "Invalid configuration"
    type_slug = "config"


class BadRequest(ISPError):
    status = 400
    title = "Bad Request"
    type_slug = "bad-request"


class Unauthorized(ISPError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(ISPError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(ISPError):
    status = 404
    title = "Not Found"
    type_slug = "not-found"


class MethodNotAllowed(ISPError):
    status = 405
    title = "Method Not Allowed"
    type_slug = "method-not-allowed"


class Conflict(ISPError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class IllegalTransition(Conflict):
    title = "Illegal status transition"
    type_slug = "illegal-transition"


class PayloadTooLarge(ISPError):
    status = 413
    title = "Payload Too Large"
    type_slug = "payload-too-large"


class ValidationFailed(ISPError):
    """Bad input; ``errors`` lists each problem with its location.

    However many problems the input has, the answer stays small: the first
    :data:`MAX_LISTED` are listed and ``error_count`` counts them all.
    """

    status = 422
    title = "Unprocessable Content"
    type_slug = "validation"

    def __init__(self, detail: str = "", *, status: int | None = None, **extra: Any) -> None:
        errors = extra.get("errors")
        if isinstance(errors, list) and len(errors) > MAX_LISTED:
            extra["errors"] = errors[:MAX_LISTED]
            extra["error_count"] = len(errors)
        super().__init__(detail, status=status, **extra)


class PluginInvalid(ValidationFailed):
    """A plugin cannot be loaded: bad manifest, failed import, hooks not as declared.

    The message names the file and field (``plugins/foo/manifest.json: version: ...``);
    ``plugin`` names the plugin. At start-up it becomes the plugin's ``error`` status.
    """

    title = "Invalid plugin"
    type_slug = "plugin-invalid"


class StorageError(ISPError):
    status = 503
    title = "Object store unavailable"
    type_slug = "storage"
    component = "object_store"


class BucketMissing(StorageError):
    """A bucket the service is configured to use is not there: the server's problem, not
    the client's, so a 503 rather than a 404."""

    title = "Object store bucket missing"
    type_slug = "storage-bucket-missing"


class DatabaseUnavailable(ISPError):
    status = 503
    title = "Database unavailable"
    type_slug = "database"
    component = "database"


def hook_fields(plugin: str | None, hook: str | None, event: str) -> dict[str, Any]:
    """How a problem or an audit entry names a hook: ``hook`` is the function
    (``handlers.provision``), ``event`` the event; ``function`` repeats ``hook`` under
    the name it was first published as."""
    return {"plugin": plugin, "hook": hook, "event": event, "function": hook}


class CommitFailed(DatabaseUnavailable):
    """A workflow's transaction could not commit; it rolled back and its hooks that had
    acted were compensated."""

    title = "Commit failed"
    type_slug = "commit-failed"


class PluginError(ISPError):
    """Raised by a plugin hook to abort the workflow that emitted the event.

    ``plugin``, ``hook`` (the function), ``event`` and ``function`` are filled in by the
    dispatcher when the hook did not set them (:func:`hook_fields`). ``status`` may be
    passed to choose the HTTP answer (422 by default).
    """

    status = 422
    title = "Plugin refused the operation"
    type_slug = "plugin"

    @property
    def plugin(self) -> str | None:
        value = self.extra.get("plugin")
        return str(value) if value is not None else None

    @property
    def hook(self) -> str | None:
        value = self.extra.get("hook")
        return str(value) if value is not None else None


class HookTimeout(PluginError):
    status = 504
    title = "Plugin hook timed out"
    type_slug = "hook-timeout"


class HookAbandoned(HookTimeout):
    """A hook ignored its cancellation for longer than ``ISP_HOOK_GRACE``: the workflow
    no longer waits for it, it runs on detached, and its plugin is quarantined."""

    title = "Plugin hook abandoned"
    type_slug = "hook-abandoned"


class HookCrashed(PluginError):
    status = 502
    title = "Plugin hook crashed"
    type_slug = "hook-crashed"


class PluginQuarantined(PluginError):
    """The plugin is quarantined (a hook of it outlived its deadline): its critical hooks
    fail fast until an admin enables it again."""

    status = 503
    title = "Plugin quarantined"
    type_slug = "plugin-quarantined"


class PluginBusy(PluginError):
    """Every thread of the plugin's executor (``ISP_PLUGIN_THREADS``) runs a ``def`` hook."""

    status = 503
    title = "Plugin busy"
    type_slug = "plugin-busy"


class WorkflowAborted(PluginError):
    """Several hooks failed in one emit; ``failures`` lists each (plugin, hook, detail)."""

    title = "Plugin hooks failed"
    type_slug = "hooks-failed"
