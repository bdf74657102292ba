"""``Plugin``: the object a plugin's ``__init__.py`` exposes as ``plugin``.

A plugin writes ``plugin = Plugin()``; the loader fills in the name, version and
manifest, so nothing is declared twice (the manifest stays the single source).
Lifecycle callbacks take no arguments and may be sync or async:

- ``on_load``: the code was imported and validated (called once per loaded version);
- ``on_enable``: the plugin starts serving (at start-up when enabled, and on enable);
- ``on_disable``: it stops serving (on disable, and before unloading an enabled plugin);
- ``on_unload``: its code is about to be dropped (stop, reload, uninstall).

``Plugin(settings=Model)`` declares a pydantic model of the plugin's settings and makes
the object a ``Plugin[Model]``: hooks read ``plugin.settings``, typed ``Model``, the values
in force at that moment (defaults < stored through ``PUT /plugins/<name>/settings`` <
``ISP_PLUGIN_<NAME>__<FIELD>``), so a change reaches the next hook call without a
reload; always an instance of this copy's ``Model``, even across a reload. A plugin
without settings is a ``Plugin[None]``. See :mod:`isp.plugins.settings`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Generic, TypeAlias, cast, final, overload

from pydantic import BaseModel
from typing_extensions import TypeVar

from isp.plugins.settings import SettingsStore, settings_store

if TYPE_CHECKING:
    from isp.plugins.manifest import Manifest

Callback: TypeAlias = Callable[[], Awaitable[None] | None]
CALLBACKS: Final = ("on_load", "on_enable", "on_disable", "on_unload")

S = TypeVar("S", bound=BaseModel | None, default=None)
M = TypeVar("M", bound=BaseModel)


@final
class Plugin(Generic[S]):
    """A plugin's identity, lifecycle and settings (``settings_model`` is the class)."""

    __slots__ = (
        "manifest",
        "name",
        "on_disable",
        "on_enable",
        "on_load",
        "on_unload",
        "settings_model",
        "settings_store",
        "version",
    )

    @overload
    def __init__(
        self: Plugin[None],
        *,
        on_load: Callback | None = None,
        on_unload: Callback | None = None,
        on_enable: Callback | None = None,
        on_disable: Callback | None = None,
        settings: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Plugin[M],
        *,
        on_load: Callback | None = None,
        on_unload: Callback | None = None,
        on_enable: Callback | None = None,
        on_disable: Callback | None = None,
        settings: type[M],
    ) -> None: ...

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
        if settings is not None and not (
            isinstance(settings, type) and issubclass(settings, BaseModel)
        ):
            raise TypeError(f"Plugin(settings=...) must be a pydantic model, got {settings!r}")
        self.on_load = on_load
        self.on_unload = on_unload
        self.on_enable = on_enable
        self.on_disable = on_disable
        self.settings_model = settings
        self.name: str | None = None
        self.version: str | None = None
        self.manifest: Manifest | None = None
        self.settings_store: SettingsStore | None = None

    def bind(self, manifest: Manifest, store: SettingsStore | None = None) -> None:
        """Called by the loader: the plugin learns who it is from its manifest, and which
        settings store serves its values (the loading app's; by default the current one)."""
        self.name = manifest.name
        self.version = manifest.version
        self.manifest = manifest
        self.settings_store = store = store if store is not None else settings_store.current()
        # Registering is I/O-free: the stored values are read later by the store's refresh.
        if self.settings_model is not None:
            store.register(manifest.name, self.settings_model)
        else:
            store.forget(manifest.name)

    @property
    def settings(self) -> S:
        """The settings in force now (an instance of ``settings_model``), or None.

        Cheap (no I/O): call it on every hook call rather than keeping the value.
        """
        model = self.settings_model
        if model is None:
            return cast(S, None)
        if self.name is None or self.settings_store is None:  # not loaded: defaults
            return cast(S, SettingsStore.defaults(model))
        return cast(S, self.settings_store.current(self.name, model))

    def callback(self, name: str) -> Callback | None:
        if name not in CALLBACKS:
            raise ValueError(f"unknown lifecycle callback {name!r}")
        found: Callback | None = getattr(self, name)
        return found

    def __repr__(self) -> str:
        return f"<Plugin {self.name or '(unbound)'} {self.version or ''}>".replace(" >", ">")
