"""MikroTik RouterOS plugin: PPPoE provisioning and backups over SSH (see README.md).

Modules: ``settings`` (the settings model), ``errors`` (what can fail), ``routeros``
(quoting, statements, error texts), ``budget`` (one deadline per hook call), ``ssh``
(connection, host key pinning, the one error boundary), ``provision`` (subscribers),
``export``, ``binary`` and ``backup`` (backups), ``handlers`` (the hooks).
"""

from __future__ import annotations

from isp.plugins import Plugin

from .settings import MikrotikSettings

plugin: Plugin[MikrotikSettings] = Plugin(settings=MikrotikSettings)

__all__ = ["MikrotikSettings", "plugin"]
