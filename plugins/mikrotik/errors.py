"""What can go wrong talking to a router, as ``PluginError`` subclasses the API renders.

::

    PluginError (isp)
    └── MikrotikError               502  base: carries device_id, host, port
        ├── RouterUnreachable       502  refused, no route, DNS failure, SSH handshake failed
        ├── RouterAuthFailed        502  the router refused the login
        ├── HostKeyChanged          409  the host key differs from the pinned one
        ├── RouterTimeout           504  connect or a command ran past its setting
        ├── RouterConnectionLost    502  the connection dropped mid-command (output cut)
        ├── RouterCommandError      422  the router printed an error (``router_message``)
        │   └── RouterPermissionDenied  422  ``not enough permissions``: fix the user's policy
        ├── BackupInvalid           502  not an export / a .backup; an export with error
        │                                lines (``menus``), interrupted or cut short
        │                                (``truncated``); a .backup never complete
        ├── SubscriberMissing       409  the subscriber's secret is not on the router
        └── InvalidValue            422  a value we refuse to send (control characters ...)

asyncssh and OS errors become these in exactly one place, :mod:`.ssh`. Messages tell the
operator what to fix; they never contain a password, and never a full command line (a
``/ppp secret add`` carries one), only its menu and verb (``command``).

A backup error carries ``step`` (``export`` or ``binary``); when the export was fetched and
the binary step failed, the error also carries the finished artifacts (:func:`with_artifacts`)
so the core stores the export and reports the failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from isp.plugins import PluginError


class MikrotikError(PluginError):
    """Base of this plugin's errors; ``where`` fills in device_id, host and port."""

    status: ClassVar[int] = 502
    title: ClassVar[str] = "Router operation failed"
    type_slug: ClassVar[str] = "mikrotik"

    def __init__(self, detail: str = "", *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail, status=status, **{k: v for k, v in extra.items() if v is not None})
        self.artifacts: list[dict[str, Any]] = []  # finished before the failure (backups)


class RouterUnreachable(MikrotikError):
    title = "Router unreachable"
    type_slug = "mikrotik-unreachable"


class RouterAuthFailed(MikrotikError):
    title = "Router refused the login"
    type_slug = "mikrotik-auth"


class HostKeyChanged(MikrotikError):
    """The router presented another host key than the one pinned on the device."""

    status = 409
    title = "Router host key changed"
    type_slug = "mikrotik-host-key"


class RouterTimeout(MikrotikError):
    status = 504
    title = "Router did not answer in time"
    type_slug = "mikrotik-timeout"


class RouterConnectionLost(MikrotikError):
    title = "Connection to the router lost"
    type_slug = "mikrotik-connection-lost"


class RouterCommandError(MikrotikError):
    """The router printed an error; ``router_message`` holds its text as printed."""

    status = 422
    title = "Router refused the command"
    type_slug = "mikrotik-command"


class RouterPermissionDenied(RouterCommandError):
    title = "Router user lacks a permission"
    type_slug = "mikrotik-permission"


class BackupInvalid(MikrotikError):
    title = "Router backup invalid"
    type_slug = "mikrotik-backup-invalid"


class SubscriberMissing(MikrotikError):
    """The router has no secret for the subscriber (renamed or removed by hand).

    Suspending then would report a subscriber cut off who may still be online, so the
    workflow is refused (and the service keeps its status) until an operator looks.
    """

    status = 409
    title = "Subscriber not on the router"
    type_slug = "mikrotik-subscriber-missing"


class InvalidValue(MikrotikError):
    status = 422
    title = "Value cannot be sent to a router"
    type_slug = "mikrotik-invalid-value"


def with_artifacts(
    error: MikrotikError, step: str, artifacts: list[dict[str, Any]]
) -> MikrotikError:
    """Mark ``error`` as the failure of ``step`` after ``artifacts`` were finished.

    The core's ``device_backup`` contract: a ``PluginError`` whose ``artifacts`` attribute
    holds completed artifacts gets those stored and recorded before the failure is
    reported (they never reach the problem document: an attribute, not an extra field).
    """
    error.extra["step"] = step
    error.artifacts = list(artifacts)
    return error
