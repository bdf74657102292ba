"""``Plugin``: the object a plugin's ``__init__.py`` exposes as ``plugin``.

A plugin writes ``plugin = Plugin()``; the loader fills in the name, version and
manifest, so nothing is declared twice (the manifest stays the single source).
Lifecycle callbacks take no arguments and may be sync or async:

- ``on_load``: the code was imported and validated (called once per loaded version);
- ``on_enable``: the plugin starts serving (at start-up when enabled, and on enable);
- ``on_disable``: it stops serving (on disable, and before unloading an enabled plugin);
- ``on_unload``: its code is about to be dropped (stop, reload, uninstall).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeAlias, final

if TYPE_CHECKING:
    from pydantic import BaseModel

    from isp.plugins.manifest import Manifest

Callback: TypeAlias = Callable[[], Awaitable[None] | None]
CALLBACKS: Final = ("on_load", "on_enable", "on_disable", "on_unload")


@final
class Plugin:
    """A plugin's identity and lifecycle; ``settings`` is the pydantic model of its settings."""

    __slots__ = (
        "manifest",
        "name",
        "on_disable",
        "on_enable",
        "on_load",
        "on_unload",
        "settings",
        "version",
    )

    def __init__(
        self,
        *,
        on_load: Callback | None = None,
        on_unload: Callback | None = None,
        on_enable: Callback | None = None,
        on_disable: Callback | None = None,
        settings: type[BaseModel] | None = None,
    ) -> None:
        for name, callback in (
            ("on_load", on_load),
            ("on_unload", on_unload),
            ("on_enable", on_enable),
            ("on_disable", on_disable),
        ):
            if callback is not None and not callable(callback):
                raise TypeError(f"Plugin({name}=...) must be callable, got {callback!r}")
        self.on_load = on_load
        self.on_unload = on_unload
        self.on_enable = on_enable
        self.on_disable = on_disable
        self.settings = settings
        self.name: str | None = None
        self.version: str | None = None
        self.manifest: Manifest | None = None

    def bind(self, manifest: Manifest) -> None:
        """Called by the loader: the plugin learns who it is from its manifest."""
        self.name = manifest.name
        self.version = manifest.version
        self.manifest = manifest

    def callback(self, name: str) -> Callback | None:
        if name not in CALLBACKS:
            raise ValueError(f"unknown lifecycle callback {name!r}")
        found: Callback | None = getattr(self, name)
        return found

    def __repr__(self) -> str:
        return f"<Plugin {self.name or '(unbound)'} {self.version or ''}>".replace(" >", ">")
