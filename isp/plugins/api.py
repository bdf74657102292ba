"""The ``/plugins`` blueprint: list, describe, enable and disable plugins.

Handlers only translate HTTP to :class:`~isp.plugins.runtime.PluginRuntime` calls; the
runtime lives in ``current_app.extensions["isp.plugins"]``. Errors are ``isp.errors``
exceptions, which the application renders as problem+json (unknown plugin -> 404).
"""

from __future__ import annotations

from typing import Any, Final

from quart import Blueprint, current_app
from quart_schema import tag

from isp.auth.guard import require
from isp.auth.permissions import PLUGINS_MANAGE
from isp.plugins.runtime import PluginRuntime

EXTENSION: Final = "isp.plugins"

bp = Blueprint("plugins", __name__, url_prefix="/plugins")


def runtime() -> PluginRuntime:
    found = current_app.extensions[EXTENSION]
    if not isinstance(found, PluginRuntime):  # pragma: no cover - wiring error
        raise TypeError(f"app.extensions[{EXTENSION!r}] is not a PluginRuntime")
    return found


@bp.get("")
@tag(["plugins"])
@require("admin")
async def list_plugins() -> dict[str, Any]:
    """Every plugin found on disk, with its status (active, disabled, error)."""
    return {"plugins": runtime().list()}


@bp.get("/<name>")
@tag(["plugins"])
@require("admin")
async def get_plugin(name: str) -> dict[str, Any]:
    """One plugin, with per-hook stats: calls, failures, timeouts, p50/p95 latency."""
    return runtime().describe(name)


@bp.put("/<name>/enable")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def enable_plugin(name: str) -> dict[str, Any]:
    """Start dispatching the plugin's hooks; survives restarts."""
    return await runtime().set_enabled(name, True)


@bp.put("/<name>/disable")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def disable_plugin(name: str) -> dict[str, Any]:
    """Stop dispatching the plugin's hooks without unloading its code; survives restarts."""
    return await runtime().set_enabled(name, False)
