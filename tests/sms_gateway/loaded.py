"""The plugin under test, imported by the real loader (as ``isp_plugins.sms_gateway.*``).

Unit tests use these module objects directly. They are detached from ``sys.modules`` at
once (as the runtime does on unload), so they neither clash with an app that loads its
own copy in another test nor leave ``isp_plugins.sms_gateway`` behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isp.core.events import CORE_EVENTS
from isp.plugins.discovery import describe
from isp.plugins.loader import detach, load

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "sms_gateway"

_loaded = load(describe(PLUGIN_DIR), CORE_EVENTS)
_modules: dict[str, Any] = _loaded.modules
detach(_loaded.name)

manifest = _loaded.manifest
entries = _loaded.entries
package: Any = _modules["isp_plugins.sms_gateway"]
gateway: Any = _modules["isp_plugins.sms_gateway.gateway"]
handlers: Any = _modules["isp_plugins.sms_gateway.handlers"]
settings: Any = _modules["isp_plugins.sms_gateway.settings"]
texts: Any = _modules["isp_plugins.sms_gateway.texts"]
