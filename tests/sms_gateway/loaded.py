"""The plugin under test, imported by the real loader (as ``isp_plugins.sms_gateway.*``).

Unit tests use these module objects directly. They are detached from ``sys.modules`` at
once (as the runtime does on unload), so they neither clash with an app that loads its
own copy in another test nor leave ``isp_plugins.sms_gateway`` behind.
"""

from __future__ import annotations

from typing import Any

from tests.plugin_modules import PLUGINS, import_plugin

PLUGIN_DIR = PLUGINS / "sms_gateway"

_loaded, _modules = import_plugin("sms_gateway")

manifest = _loaded.manifest
entries = _loaded.entries
package: Any = _modules[""]
gateway: Any = _modules["gateway"]
handlers: Any = _modules["handlers"]
settings: Any = _modules["settings"]
texts: Any = _modules["texts"]
