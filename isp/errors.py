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
    │   └── PluginInvalid         422  a plugin's manifest or code failed validation
    ├── StorageError              503  the object store failed or is unreachable
    ├── DatabaseUnavailable       503
    │   └── CommitFailed          503  a workflow's commit failed (its changes are gone)
    └── PluginError               422  raised by a plugin hook to abort a workflow
        ├── HookTimeout           504  a hook ran past its timeout
        ├── HookCrashed           502  a hook raised something that is not a PluginError
        └── WorkflowAborted       *    several hooks failed; carries every failure

Library errors (Tortoise, botocore, asyncssh) are translated into these at exactly one
boundary each, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ISPError(Exception):
    """Base of every error the service raises on purpose.

    ``extra`` holds problem+json extension members (``plugin``, ``hook``, ``errors``...).
    """

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type_slug: ClassVar[str] = "internal"

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
    """Bad input; ``errors`` lists each problem with its location."""

    status = 422
    title = "Unprocessable Content"
    type_slug = "validation"


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


class DatabaseUnavailable(ISPError):
    status = 503
    title = "Database unavailable"
    type_slug = "database"


class CommitFailed(DatabaseUnavailable):
    """A workflow's transaction could not commit; it rolled back and its hooks that had
    acted were compensated."""

    title = "Commit failed"
    type_slug = "commit-failed"


class PluginError(ISPError):
    """Raised by a plugin hook to abort the workflow that emitted the event.

    ``plugin`` and ``hook`` are filled in by the dispatcher when the hook did not set them.
    ``status`` may be passed to choose the HTTP answer (422 by default).
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


class HookCrashed(PluginError):
    status = 502
    title = "Plugin hook crashed"
    type_slug = "hook-crashed"


class WorkflowAborted(PluginError):
    """Several hooks failed in one emit; ``failures`` lists each (plugin, hook, detail)."""

    title = "Plugin hooks failed"
    type_slug = "hooks-failed"
