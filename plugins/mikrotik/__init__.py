"""MikroTik RouterOS plugin: PPPoE provisioning and backups over SSH (see README.md).

Modules: ``settings`` (the settings model), ``errors`` (what can fail), ``routeros``
(quoting, commands, error texts), ``ssh`` (connection, host key pinning, the one error
boundary), ``provision`` and ``backup`` (the router work), ``handlers`` (the hooks).
"""

from __future__ import annotations

from isp.plugins import Plugin

from .settings import MikrotikSettings, bind

plugin = Plugin(settings=MikrotikSettings)
bind(plugin)

__all__ = ["MikrotikSettings", "plugin"]
