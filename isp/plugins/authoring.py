"""The author's kit behind ``isp plugins new`` and ``isp plugins pack``.

:func:`scaffold` writes a plugin that loads and a test that passes, in a project folder
of the author's (anywhere, not only in this repository): ``<dir>/<name>/`` (manifest,
``__init__.py``, ``handlers.py``), ``<dir>/tests/test_<name>.py`` and, when the folder
has no pytest settings yet, a ``pytest.ini``. The test runs with the fixtures of
``pip install isp-framework[testing]``.

:func:`pack` builds the zip ``POST /plugins/upload`` takes from a plugin folder, and
checks it exactly as an upload would (:func:`~isp.plugins.archive.inspect_zip`).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Final

import isp
from isp.errors import ValidationFailed
from isp.plugins.archive import inspect_zip, is_ignored
from isp.plugins.manifest import MANIFEST_FILE, check_slug, read_manifest

PACK_LIMIT: Final = 16 * 1024 * 1024

_INIT: Final = '''"""{name}: what it does, in one line."""

from isp.plugins import Plugin

plugin = Plugin()
'''

_HANDLERS: Final = '''"""The hooks of {name}; each runs in the workflow's transaction (``db``)."""

from isp.plugins import registry


@registry.hook("customer_created")
async def welcome(customer, db):
    """Greet a new customer by email; nothing to do without an address.

    Raise ``isp.plugins.PluginError("why")`` to refuse: the workflow rolls back (422).
    """
    if not customer.email:
        return None
    return f"welcome {{customer.email}}"
'''

_TEST: Final = '''"""Tests of {name}, with the fixtures of isp-framework[testing]."""

from pathlib import Path

from isp.testing import load_plugin, make_customer

PLUGIN = Path(__file__).resolve().parent.parent / "{name}"


async def test_welcome_greets_a_new_customer(plugin_registry, db_session):
    load_plugin(plugin_registry, PLUGIN)  # validated as at service start
    customer = await make_customer(db_session, email="ada@example.net")

    results = await plugin_registry.emit("customer_created", customer, db=db_session)

    assert [r.value for r in results] == ["welcome ada@example.net"]


async def test_welcome_skips_a_customer_without_email(plugin_registry, db_session):
    load_plugin(plugin_registry, PLUGIN)
    customer = await make_customer(db_session, email=None)

    results = await plugin_registry.emit("customer_created", customer, db=db_session)

    assert [r.value for r in results] == [None]
'''

_PYTEST_INI: Final = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
testpaths = tests
"""


def scaffold(name: str, where: Path) -> list[Path]:
    """Write a new plugin ``name`` under ``where``; refuses to overwrite anything."""
    try:
        check_slug(name, "plugin name")
    except ValueError as exc:
        raise ValidationFailed(str(exc), errors=[{"loc": ["name"], "msg": str(exc)}]) from None
    manifest = {
        "name": name,
        "version": "0.1.0",
        "description": f"{name} plugin",
        "author": "",
        "hooks": ["customer_created"],
        "requires_isp": f">={isp.__version__}",
        "requires": {},
    }
    files = {
        where / name / MANIFEST_FILE: json.dumps(manifest, indent=2) + "\n",
        where / name / "__init__.py": _INIT.format(name=name),
        where / name / "handlers.py": _HANDLERS.format(name=name),
        where / "tests" / f"test_{name}.py": _TEST.format(name=name),
    }
    if not any((where / f).exists() for f in ("pytest.ini", "pyproject.toml", "setup.cfg")):
        files[where / "pytest.ini"] = _PYTEST_INI
    taken = [str(path) for path in files if path.exists()]
    if taken:
        raise ValidationFailed(
            f"refusing to overwrite {', '.join(taken)}; choose another name or folder",
            errors=[{"loc": ["name"], "msg": "already exists"}],
        )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def pack(folder: Path, output: Path | None = None) -> Path:
    """Zip the plugin in ``folder`` as ``<name>/...``; checked as an upload would be."""
    manifest = read_manifest(folder, f"{folder.name}/{MANIFEST_FILE}")
    target = output or Path.cwd() / f"{manifest.name}-{manifest.version}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            hidden = any(part.startswith(".") for part in rel.split("/"))
            if path.is_file() and not path.is_symlink() and not hidden and not is_ignored(rel):
                archive.write(path, f"{manifest.name}/{rel}")
    data = buffer.getvalue()
    inspect_zip(data, max_size=PACK_LIMIT)
    target.write_bytes(data)
    return target
