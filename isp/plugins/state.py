"""``PluginState``: what the runtime knows of one plugin folder, and its API shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from isp.plugins.discovery import PluginSource
from isp.plugins.loader import LoadedPlugin
from isp.plugins.manifest import PERMISSIONS
from isp.plugins.trust import UNSIGNED, Isolation, Verdict

if TYPE_CHECKING:
    from isp.plugins.sandbox import SandboxedPlugin


@dataclass
class PluginState:
    """What the runtime knows of one plugin folder; ``loaded`` is the version serving."""

    name: str
    source: PluginSource
    enabled: bool = True
    origin: str = "local"
    sha256: str | None = None
    tree_sha256: str | None = None
    loaded: LoadedPlugin | None = None
    loaded_at: datetime | None = None
    error: str | None = None
    reload_error: str | None = None
    trust: Verdict = UNSIGNED  # the signature of the files in its folder
    isolation: Isolation = "in_process"
    quarantined: str | None = None
    granted: tuple[str, ...] = ()  # the manifest permissions the operator granted
    worker: SandboxedPlugin | None = None  # the sandboxed version's worker, if sandboxed

    @property
    def status(self) -> str:
        if self.loaded is None or (self.quarantined and self.enabled):
            return "error"
        return "active" if self.enabled else "disabled"

    def to_json(self) -> dict[str, Any]:
        manifest = self.loaded.manifest if self.loaded else self.source.manifest
        return {
            "name": self.name,
            "version": manifest.version if manifest else None,
            "description": manifest.description if manifest else "",
            "hooks": list(manifest.hook_names) if manifest else [],
            "enabled": self.enabled,
            "status": self.status,
            "error": self.error if self.loaded is None else self.quarantined,
            "sha256": self.sha256,
            "source": self.origin,
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
            "reload_error": self.reload_error,
            "quarantined": self.quarantined,
            "requires": dict(self.requires),
            **self.trust.to_json(),
            "isolation": self.isolation,
            "permissions": {name: name in self.granted for name in PERMISSIONS},
        }

    @property
    def requires(self) -> dict[str, str]:
        manifest = self.loaded.manifest if self.loaded else self.source.manifest
        return dict(manifest.requires) if manifest else {}
