"""The ``/plugins`` blueprint: list, describe, enable and disable plugins.

Handlers only translate HTTP to :class:`~isp.plugins.runtime.PluginRuntime` calls; the
runtime lives in ``current_app.extensions["isp.plugins"]``. Errors are ``isp.errors``
exceptions, which the application renders as problem+json (unknown plugin -> 404).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from quart import Blueprint, current_app, request
from quart_schema import tag

from isp.auth.guard import current_principal, require
from isp.auth.permissions import PLUGINS_MANAGE
from isp.errors import ValidationFailed
from isp.plugins.manifest import PERMISSIONS
from isp.plugins.runtime import PluginRuntime
from isp.plugins.service import PluginService

EXTENSION: Final = "isp.plugins"
SERVICE_EXTENSION: Final = "isp.plugin_service"

bp = Blueprint("plugins", __name__, url_prefix="/plugins")


def runtime() -> PluginRuntime:
    found = current_app.extensions[EXTENSION]
    if not isinstance(found, PluginRuntime):  # pragma: no cover - wiring error
        raise TypeError(f"app.extensions[{EXTENSION!r}] is not a PluginRuntime")
    return found


def service() -> PluginService:
    found = current_app.extensions[SERVICE_EXTENSION]
    if not isinstance(found, PluginService):  # pragma: no cover - wiring error
        raise TypeError(f"app.extensions[{SERVICE_EXTENSION!r}] is not a PluginService")
    return found


def _flag(name: str) -> bool:
    value = request.args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValidationFailed(
            f"query parameter {name!r} must be true or false, not {value!r}",
            errors=[{"loc": ["query", name], "msg": "must be true or false"}],
        )
    return value in ("true", "1", "yes")


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
    return await service().set_enabled(name, True, current_principal().user_name)


@bp.put("/<name>/disable")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def disable_plugin(name: str) -> dict[str, Any]:
    """Stop dispatching the plugin's hooks without unloading its code; survives restarts."""
    user = current_principal().user_name
    return await service().set_enabled(name, False, user, cascade=_flag("cascade"))


@bp.post("/upload")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def upload_plugin() -> tuple[dict[str, Any], int]:
    """Install (201) or upgrade (200) from a zip in the multipart field ``file``.

    409 for the same version with other content or an older version (``?force=true``
    downgrades) or a newer version over a local plugin (``?replace_local=true``), 413
    over ``ISP_PLUGIN_MAX_UPLOAD``, 422 for an invalid zip or plugin.
    ``?grant=network,secrets`` grants what the manifest's ``permissions`` ask (409
    naming them without it).
    """
    force = _flag("force")
    uploaded = (await request.files).get("file")
    if uploaded is None:
        raise ValidationFailed(
            "send the plugin zip as the multipart/form-data field 'file'",
            errors=[{"loc": ["body", "file"], "msg": "field required"}],
        )
    grant = _grant()
    data = await asyncio.to_thread(uploaded.read)
    return await service().upload(
        data,
        current_principal().user_name,
        force=force,
        replace_local=_flag("replace_local"),
        grant=grant,
    )


def _grant() -> frozenset[str]:
    """``?grant=network,secrets``: the manifest permissions the operator grants (422 for
    a name that is not one)."""
    names = frozenset(
        part.strip() for part in request.args.get("grant", "").split(",") if part.strip()
    )
    unknown = sorted(names - set(PERMISSIONS))
    if unknown:
        raise ValidationFailed(
            f"grant: {', '.join(unknown)} is not a permission; known: {', '.join(PERMISSIONS)}",
            errors=[{"loc": ["query", "grant"], "msg": f"unknown permission {unknown[0]!r}"}],
        )
    return names


@bp.delete("/<name>")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def uninstall_plugin(name: str) -> tuple[str, int]:
    """Unload and remove the plugin; its data and settings are kept unless ?purge=true."""
    await service().uninstall(
        name, current_principal().user_name, purge=_flag("purge"), cascade=_flag("cascade")
    )
    return "", 204
