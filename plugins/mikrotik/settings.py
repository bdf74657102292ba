"""``MikrotikSettings``: the plugin's knobs, validated by pydantic.

Hooks read them on every call through :func:`current`, i.e. ``plugin.settings``: the
values in force (defaults < ``PUT /plugins/mikrotik/settings`` <
``ISP_PLUGIN_MIKROTIK__<FIELD>``), so a change reaches the next hook without a reload.
``current`` also copes with an older runtime where ``plugin.settings`` is the model class
(defaults) and with an instance of this model from another loaded copy of the plugin.

The timeouts here are caps per step; what a step really gets is also cut to what is left
of its hook's time budget (:mod:`.budget`), whose length comes from the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from isp.plugins import registry

Seconds = Annotated[float, Field(gt=0, le=3600)]


class MikrotikSettings(BaseModel):
    """Timeouts, what a backup contains, and the key binary backups are sealed with.

    ``backup_key``: each device's ``.backup`` is encrypted with
    ``backup_password(backup_key, device_id)`` (HMAC-SHA256, see there), so an operator
    who knows the key can restore any backup. Unset: backups are saved with
    ``dont-encrypt=yes`` (they then contain the router's secrets in clear).

    ``export_show_sensitive`` (default on): RouterOS 7 leaves secrets out of ``/export``
    without it, and the export is the only copy that restores on other hardware. v6
    rejects the flag and shows secrets anyway; the plugin then runs plain ``/export``.
    ``backup_file_wait``: RouterOS writes the ``.backup`` in the background and NAND
    write-back can delay it by up to 40 s (MikroTik manual, File).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: Seconds = 10.0
    command_timeout: Seconds = 20.0
    export_timeout: Seconds = 90.0
    backup_file_wait: Seconds = 45.0
    export_show_sensitive: bool = True
    binary_backup: bool = True
    backup_key: SecretStr | None = None
    export_retention: Annotated[int, Field(ge=1)] | None = None


class _Holder:
    """The ``Plugin`` object of this copy of the plugin (set by ``__init__``)."""

    plugin: object = None


def bind(plugin: object) -> None:
    _Holder.plugin = plugin


def current() -> MikrotikSettings:
    """The settings in force now (the runtime's instance, else the defaults)."""
    value = getattr(_Holder.plugin, "settings", None)
    if isinstance(value, MikrotikSettings):
        return value
    if isinstance(value, BaseModel):  # the same model from a reloaded copy of the plugin
        return MikrotikSettings.model_validate(dict(value))
    return MikrotikSettings()


def hook_timeout(event: str) -> float:
    """The timeout the dispatcher gives this plugin's ``event`` hook: the manifest's, else
    the service's default (``ISP_HOOK_TIMEOUT``). The one source of every time budget."""
    manifest = getattr(_Holder.plugin, "manifest", None)
    for hook in getattr(manifest, "hooks", ()):
        if hook.name == event and hook.timeout:
            return float(hook.timeout)
    return float(registry.default_timeout)


def backup_password(key: SecretStr, device_id: int) -> str:
    """The password of device ``device_id``'s binary backups: deterministic, per device.

    ``hex(HMAC-SHA256(key, "isp-mikrotik-backup:<device_id>"))[:32]``; to restore by
    hand::

        python -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(),
            f"isp-mikrotik-backup:{sys.argv[2]}".encode(), hashlib.sha256).hexdigest()[:32])'
            KEY DEVICE_ID
    """
    message = f"isp-mikrotik-backup:{device_id}".encode()
    return hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()[:32]
