"""The plugin under test, imported by the real loader (as ``isp_plugins.mikrotik.*``).

Unit tests use these module objects directly. They are detached from ``sys.modules``
at once (as the runtime does on unload), so they neither clash with an app that loads
its own copy in another test nor leave ``isp_plugins.mikrotik`` behind; the plugin
imports nothing lazily, so detached modules keep working.
"""

from __future__ import annotations

from typing import Any

from tests.plugin_modules import PLUGINS, import_plugin

PLUGIN_DIR = PLUGINS / "mikrotik"

_loaded, _modules = import_plugin("mikrotik")

manifest = _loaded.manifest
entries = _loaded.entries
package: Any = _modules[""]
backup: Any = _modules["backup"]
binary: Any = _modules["binary"]
budget: Any = _modules["budget"]
export: Any = _modules["export"]
errors: Any = _modules["errors"]
handlers: Any = _modules["handlers"]
provision: Any = _modules["provision"]
routeros: Any = _modules["routeros"]
settings: Any = _modules["settings"]
ssh: Any = _modules["ssh"]
undo: Any = _modules["undo"]
