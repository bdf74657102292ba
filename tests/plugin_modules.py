"""Import a real plugin folder through the loader, for unit tests of its modules.

The plugin is validated exactly as at service start, then detached from ``sys.modules``
so nothing leaks into the app tests; its modules stay usable through the mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isp.core.events import CORE_EVENTS
from isp.plugins.discovery import describe
from isp.plugins.loader import LoadedPlugin, detach, load

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def import_plugin(name: str) -> tuple[LoadedPlugin, dict[str, Any]]:
    """The loaded plugin and its modules, by short name (``"handlers"``, ``""`` = package)."""
    loaded = load(describe(PLUGINS / name), CORE_EVENTS)
    detach(loaded.name)
    prefix = f"isp_plugins.{name}"
    return loaded, {key.removeprefix(prefix).lstrip("."): m for key, m in loaded.modules.items()}
