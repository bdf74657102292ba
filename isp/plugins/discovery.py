"""Find and describe: which plugin folders exist and what their manifests say.

Nothing here imports plugin code (Home Assistant's loader/setup split): a plugin with a
broken manifest is still listed, with the reason, and the operator can fix or disable it.
All of it is blocking file I/O; async callers use :func:`discover_async`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from isp.errors import PluginInvalid
from isp.plugins.manifest import Manifest, check_slug, read_manifest


@dataclass(frozen=True, slots=True)
class PluginSource:
    """A plugin folder: its manifest when valid, else why it cannot be loaded."""

    name: str
    path: Path
    label: str
    manifest: Manifest | None = None
    error: str | None = None


def is_plugin_folder(path: Path) -> bool:
    """Folders starting with '.' or '_' (staging dirs, ``__pycache__``) are not plugins."""
    return path.is_dir() and not path.name.startswith((".", "_"))


def discover(plugins_dir: Path) -> list[PluginSource]:
    """Every plugin folder of ``plugins_dir``, sorted by name; none when it does not exist."""
    if not plugins_dir.is_dir():
        return []
    return [describe(child) for child in sorted(plugins_dir.iterdir()) if is_plugin_folder(child)]


async def discover_async(plugins_dir: Path) -> list[PluginSource]:
    return await asyncio.to_thread(discover, plugins_dir)


def describe(folder: Path) -> PluginSource:
    """Read one plugin folder without running its code."""
    label = f"{folder.parent.name}/{folder.name}"
    try:
        check_slug(folder.name, "plugin name")
    except ValueError as exc:
        why = f"{label}: folder name: {exc} (it becomes a module name)"
        return PluginSource(folder.name, folder, label, error=why)
    try:
        manifest = read_manifest(folder, f"{label}/manifest.json")
    except PluginInvalid as exc:
        return PluginSource(folder.name, folder, label, error=exc.detail)
    if not (folder / "__init__.py").is_file():
        why = f"{label}/__init__.py: missing; a plugin is a Python package exposing `plugin`"
        return PluginSource(folder.name, folder, label, manifest=manifest, error=why)
    return PluginSource(folder.name, folder, label, manifest=manifest)
