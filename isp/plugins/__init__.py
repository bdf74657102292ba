"""The plugin system; this module is the whole surface a plugin author needs.

::

    from isp.plugins import Plugin, PluginError, registry

    plugin = Plugin()

    @registry.hook("service_provision", timeout=5)
    async def provision(service, db):
        raise PluginError("no free port on the access router")

    @provision.compensate          # undoes provision if the workflow aborts after it acted
    async def unprovision(service, db): ...

Importing this package stays light: the loader, runtime and API live in submodules the
application imports itself.
"""

from __future__ import annotations

from isp.errors import HookTimeout, PluginError
from isp.plugins.hooks import HookResult
from isp.plugins.plugin import Plugin
from isp.plugins.registry import registry

__all__ = ["HookResult", "HookTimeout", "Plugin", "PluginError", "registry"]
