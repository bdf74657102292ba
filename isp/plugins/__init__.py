"""The plugin system; this module is the whole surface a plugin author needs.

::

    from isp.plugins import Delivery, Plugin, PluginError, registry

    plugin = Plugin()

    @registry.hook("service_provision", timeout=5)
    async def provision(service, db):
        raise PluginError("no free port on the access router")

    @provision.compensate          # undoes provision if the workflow aborts after it acted
    async def unprovision(service, db): ...

    @registry.after_commit("service_provision")
    async def welcome(service, delivery: Delivery):
        ...  # runs once committed, at least once; delivery.id is the idempotency key

Importing this package stays light: the loader, runtime and API live in submodules the
application imports itself.
"""

from __future__ import annotations

from isp.errors import HookTimeout, PluginError
from isp.plugins.hooks import Delivery, HookResult
from isp.plugins.plugin import Plugin
from isp.plugins.registry import registry

__all__ = ["Delivery", "HookResult", "HookTimeout", "Plugin", "PluginError", "registry"]
