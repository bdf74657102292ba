"""``MikrotikSettings``: the plugin's knobs, validated by pydantic.

Hooks read them on every call through ``plugin.settings`` (the package's
``Plugin[MikrotikSettings]``): the values in force (defaults <
``PUT /plugins/mikrotik/settings`` < ``ISP_PLUGIN_MIKROTIK__<FIELD>``), so a change
reaches the next hook without a reload.

The timeouts here are caps per step; what a step really gets is also cut to what is left
of its hook's time budget (:mod:`.budget`), whose length comes from the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
