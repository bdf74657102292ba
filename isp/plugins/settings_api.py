"""``GET``/``PUT /plugins/<name>/settings``: a plugin's settings over the admin API.

Handlers translate HTTP to calls on the app's settings store (its runtime's
:class:`~isp.plugins.settings.SettingsStore`). The plugin must be one the runtime knows
(else 404) and must declare a settings model (else 404 saying so). Reads are masked
(secrets never leave the process); a PUT is a partial update validated against the
model, answered with the same masked view as a GET.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import tag

from isp.auth.guard import current_principal, require
from isp.auth.permissions import PLUGINS_MANAGE
from isp.crypto import process_box
from isp.errors import NotFound, ValidationFailed
from isp.plugins.api import runtime
from isp.plugins.settings import SettingsStore

bp = Blueprint("plugin_settings", __name__, url_prefix="/plugins")


async def _ready(name: str) -> SettingsStore:
    """404 unless ``name`` is a plugin with a settings model; read its stored values once."""
    plugin = runtime().describe(name)  # NotFound for an unknown plugin
    settings_store = runtime().settings_store
    if settings_store.model_of(name) is None:
        why = (
            f"plugin {name!r} is not loaded ({plugin.get('error') or 'status error'}), so its "
            "settings model is unknown"
            if plugin.get("status") == "error"
            else f"plugin {name!r} has no settings: its Plugin(...) declares no settings model"
        )
        raise NotFound(why, plugin=name)
    # Until the runtime refreshes each plugin when it loads, do it on first use here.
    if not settings_store.is_refreshed(name):
        await settings_store.refresh(name, process_box())
    return settings_store


@bp.get("/<name>/settings")
@tag(["plugins"])
@require("admin")
async def get_settings(name: str) -> dict[str, Any]:
    """Every setting in force (secrets masked), which ones the environment sets, the schema."""
    settings_store = await _ready(name)
    return settings_store.public_view(name)


@bp.put("/<name>/settings")
@tag(["plugins"])
@require("admin", PLUGINS_MANAGE)
async def put_settings(name: str) -> dict[str, Any]:
    """Change some settings; the plugin's next hook call sees them, on every instance.

    Body: a JSON object of field values (others keep theirs). Sending the mask back for
    a secret keeps the stored secret. Fields set by ``ISP_PLUGIN_<NAME>__<FIELD>`` and
    unknown fields are refused with 422, as are values the model rejects.
    """
    settings_store = await _ready(name)
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed(
            'the body must be a JSON object of setting values, e.g. {"field": value}',
            errors=[{"loc": ["body"], "msg": "expected a JSON object"}],
            plugin=name,
        )
    await settings_store.update(name, body, process_box(), actor=current_principal().user_name)
    return settings_store.public_view(name)
