"""SMS gateway plugin: texts customers when their service changes (see README.md).

Modules: ``settings`` (the settings model and message templates), ``gateway`` (the HTTP
client, the one place gateway errors are translated), ``models`` (the message log),
``handlers`` (the hooks).
"""

from __future__ import annotations

from isp.plugins import Plugin

from .settings import SmsSettings

plugin = Plugin(settings=SmsSettings)

__all__ = ["SmsSettings", "plugin"]
