"""isp.plugins is the whole surface of a plugin author: complete and sorted."""

from __future__ import annotations
import __future__

from types import ModuleType

import isp.plugins
from isp.errors import HookTimeout, PluginError
from isp.plugins.plugin import Plugin
from isp.plugins.registry import PluginRegistry

annotations_feature = __future__.annotations


def test_all_is_sorted() -> None:
    assert isp.plugins.__all__ == sorted(isp.plugins.__all__)


def test_all_is_complete_and_importable() -> None:
    public = {
        name
        for name, value in vars(isp.plugins).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)  # submodules: not part of the surface
        and value is not annotations_feature
    }
    assert set(isp.plugins.__all__) == public
    for name in isp.plugins.__all__:
        assert getattr(isp.plugins, name) is not None


def test_the_names_plugin_authors_use() -> None:
    assert isinstance(isp.plugins.registry.current(), PluginRegistry)  # the running app's
    assert callable(isp.plugins.registry.hook)
    assert callable(isp.plugins.registry.emit)
    assert callable(isp.plugins.registry.after_commit)
    assert {"id", "attempt"} <= set(isp.plugins.Delivery.__dataclass_fields__)
    assert isp.plugins.PluginError is PluginError
    assert issubclass(isp.plugins.HookTimeout, PluginError)
    assert isp.plugins.HookTimeout is HookTimeout
    assert isp.plugins.Plugin is Plugin


def test_plugin_needs_no_arguments_and_accepts_callbacks_and_settings() -> None:
    bare = Plugin()
    assert (bare.name, bare.version, bare.manifest, bare.settings) == (None, None, None, None)

    async def on_enable() -> None:
        return None

    plugin = Plugin(on_enable=on_enable, on_load=lambda: None, settings=None)
    assert plugin.callback("on_enable") is on_enable
    assert plugin.callback("on_unload") is None
