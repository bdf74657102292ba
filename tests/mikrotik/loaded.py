"""The plugin under test, imported by the real loader (as ``isp_plugins.mikrotik.*``).

Unit tests use these module objects directly. They are detached from ``sys.modules``
at once (as the runtime does on unload), so they neither clash with an app that loads
its own copy in another test nor leave ``isp_plugins.mikrotik`` behind; the plugin
imports nothing lazily, so detached modules keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isp.core.events import CORE_EVENTS
from isp.plugins.discovery import describe
from isp.plugins.loader import detach, load

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "mikrotik"

_loaded = load(describe(PLUGIN_DIR), CORE_EVENTS)
_modules: dict[str, Any] = _loaded.modules
detach(_loaded.name)

manifest = _loaded.manifest
entries = _loaded.entries
package: Any = _modules["isp_plugins.mikrotik"]
backup: Any = _modules["isp_plugins.mikrotik.backup"]
errors: Any = _modules["isp_plugins.mikrotik.errors"]
handlers: Any = _modules["isp_plugins.mikrotik.handlers"]
provision: Any = _modules["isp_plugins.mikrotik.provision"]
routeros: Any = _modules["isp_plugins.mikrotik.routeros"]
settings: Any = _modules["isp_plugins.mikrotik.settings"]
ssh: Any = _modules["isp_plugins.mikrotik.ssh"]
