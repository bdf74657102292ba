"""What a sandboxed plugin's failures look like to the code that calls its hooks.

They extend the in-process types, so dispatch treats them as it treats any hook: a
crash is a ``HookCrashed`` (502), a quarantined plugin's hook a 503 ``PluginError``.
"""

from __future__ import annotations

from isp.errors import HookCrashed, PluginError


class SandboxUnavailable(PluginError):
    """The sandbox cannot be started here (bubblewrap is not installed)."""

    status = 503
    title = "Plugin sandbox unavailable"
    type_slug = "sandbox-unavailable"


class WorkerCrashed(HookCrashed):
    """The plugin's worker process died while the hook ran (signal, ``os._exit``, limit)."""

    title = "Plugin worker crashed"
    type_slug = "worker-crashed"


class PluginQuarantined(PluginError):
    """The worker crashed too often; the plugin's hooks fail fast until it is reset."""

    status = 503
    title = "Plugin quarantined"
    type_slug = "plugin-quarantined"
