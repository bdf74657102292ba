"""A sandboxed plugin's key-value store, on the connection of the workflow that calls it.

:class:`PluginValues` is the :class:`~isp.plugins.sandbox.KeyValueStore` a sandboxed
hook's ``db`` reaches: every ``get``/``put``/``delete`` is run here, by the host, on the
connection the core passed as ``db`` (the workflow's transaction), so what a hook wrote
commits or rolls back with the workflow. A plugin sees only its own keys.
"""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from isp.plugins.models import PluginValue


class PluginValues:
    """The keys of ``plugin`` in table ``plugin_value``, through ``conn`` (None: default)."""

    __slots__ = ("conn", "plugin")

    def __init__(self, plugin: str, conn: BaseDBAsyncClient | None) -> None:
        self.plugin = plugin
        self.conn = conn

    async def get(self, key: str) -> Any:
        row = await PluginValue.filter(plugin=self.plugin, key=key).using_db(self.conn).first()
        return row.value if row is not None else None

    async def put(self, key: str, value: Any) -> None:
        updated = await (
            PluginValue.filter(plugin=self.plugin, key=key).using_db(self.conn).update(value=value)
        )
        if not updated:
            await PluginValue.create(plugin=self.plugin, key=key, value=value, using_db=self.conn)

    async def delete(self, key: str) -> None:
        await PluginValue.filter(plugin=self.plugin, key=key).using_db(self.conn).delete()


def values_for(plugin: str, db: Any) -> PluginValues:
    """The store of one call: on ``db`` when it is a connection, else the default one."""
    return PluginValues(plugin, db if isinstance(db, BaseDBAsyncClient) else None)
