"""``Plugin[S]``: the object a plugin exposes, typed by its settings model."""

from __future__ import annotations

from pydantic import BaseModel

from isp.plugins import Plugin


class Tuning(BaseModel):
    label: str = "default"


def test_settings_are_an_instance_of_the_plugins_model() -> None:
    plugin: Plugin[Tuning] = Plugin(settings=Tuning)
    settings = plugin.settings
    assert isinstance(settings, Tuning)
    assert settings.label == "default"  # typed: no cast, no shim


def test_a_plugin_without_settings_is_a_plugin_of_none() -> None:
    plugin: Plugin[None] = Plugin()
    assert plugin.settings is None
