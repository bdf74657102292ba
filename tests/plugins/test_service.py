"""PluginService, the admin verbs over HTTP: install, upgrade, downgrade, enable, disable,
uninstall; the upload pipeline (validated out of the server, imported in it once, every
attempt audited, hostile zips refused without a trace); and the rules for local plugins
(folders put in ISP_PLUGINS_DIR by hand). On both databases; the verbs on both object
stores (``STORES``)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

import isp.auth.guard
from isp.app import create_app
from isp.config import Settings
from tests.conftest import Tokens, auth, make_settings
from tests.plugins.builders import (
    STAMP_HANDLERS,
    entry,
    make_zip,
    plugin_files,
    stamp_files,
    stamp_zip,
    stamped,
    upload,
    write_plugin,
    zip_of,
)
from tests.plugins.conftest import STORES

MAX_UPLOAD = 300_000


@pytest.fixture
def import_timeout() -> float:
    """ISP_PLUGIN_IMPORT_TIMEOUT of the app: the default; a test may parametrize it."""
    return 10.0


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, store_settings: dict[str, Any], import_timeout: float
) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        plugin_max_upload=MAX_UPLOAD,
        plugin_import_timeout=import_timeout,
        **store_settings,
    )


async def newest_audit(client: Client, token: str) -> dict[str, Any]:
    entries = (await (await client.get("/audit", headers=auth(token))).get_json())["entries"]
    return dict(entries[0])


async def stored_keys(app: Quart) -> list[str]:
    parts = app.extensions["isp"]
    return [o.key for o in await parts.store.list(parts.settings.s3_plugins_bucket)]


def snapshot(settings: Settings) -> dict[str, bytes]:
    """Every file under the plugins folder, dot-folders included, with its bytes."""
    found: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(settings.plugins_dir):
        for filename in filenames:
            path = Path(dirpath) / filename
            found[str(path.relative_to(settings.plugins_dir))] = path.read_bytes()
    return found


# --- the admin verbs -----------------------------------------------------------------


@STORES
async def test_install_upgrade_downgrade_reupload_enable_disable_uninstall(
    app: Quart, client: Client, tokens: Tokens, settings: Settings
) -> None:
    v1 = stamp_zip(version="1.0.0")
    installed = await upload(client, tokens.admin, v1)
    assert installed.status_code == 201, await installed.get_data(as_text=True)
    body = await installed.get_json()
    assert body["status"] == "active"
    assert body["source"] == "upload"
    assert body["sha256"] == hashlib.sha256(v1).hexdigest()
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"
    assert await stored_keys(app) == [f"stamp/1.0.0/{body['sha256']}.zip"]

    same = await upload(client, tokens.admin, v1)
    assert same.status_code == 200
    assert (await same.get_json())["version"] == "1.0.0"

    changed = await upload(client, tokens.admin, stamp_zip(version="1.0.0", folder=False))
    assert changed.status_code == 409

    v2 = stamp_zip(version="1.1.0")
    upgraded = await upload(client, tokens.admin, v2)
    assert upgraded.status_code == 200, await upgraded.get_data(as_text=True)
    assert (await upgraded.get_json())["version"] == "1.1.0"
    assert await stamped(client, tokens.operator) == "stamp-1.1.0"

    older = await upload(client, tokens.admin, v1)
    assert older.status_code == 409
    assert "downgrade" in (await older.get_json())["detail"]
    assert await stamped(client, tokens.operator) == "stamp-1.1.0"

    disabled = await client.put("/plugins/stamp/disable", headers=auth(tokens.admin))
    assert (await disabled.get_json())["status"] == "disabled"
    assert await stamped(client, tokens.operator) is None
    enabled = await client.put("/plugins/stamp/enable", headers=auth(tokens.admin))
    assert (await enabled.get_json())["status"] == "active"

    forced = await upload(client, tokens.admin, v1, "?force=true")
    assert forced.status_code == 200
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"

    removed = await client.delete("/plugins/stamp", headers=auth(tokens.admin))
    assert removed.status_code == 204
    assert (await client.get("/plugins/stamp", headers=auth(tokens.admin))).status_code == 404
    assert not (settings.plugins_dir / "stamp").exists()
    assert await stamped(client, tokens.operator) is None

    audit = await (await client.get("/audit", headers=auth(tokens.admin))).get_json()
    actions = [
        (e["action"], e["from_version"], e["to_version"], e["detail"].get("outcome"))
        for e in audit["entries"]
    ]
    assert actions == [
        ("uninstall", "1.0.0", None, None),
        ("upgrade", "1.1.0", "1.0.0", "upgraded"),
        ("enable", "1.1.0", "1.1.0", None),
        ("disable", "1.1.0", "1.1.0", None),
        ("upload", None, None, "refused"),  # the downgrade without ?force=true
        ("upgrade", "1.0.0", "1.1.0", "upgraded"),
        ("upload", None, None, "refused"),  # same version, other content
        ("upload", "1.0.0", "1.0.0", "unchanged"),
        ("install", None, "1.0.0", "installed"),
    ]
    assert all(e["actor"] == "alice" for e in audit["entries"])
    assert audit["entries"][-1]["sha256"] == hashlib.sha256(v1).hexdigest()
    assert audit["entries"][4]["sha256"] == hashlib.sha256(v1).hexdigest()
    assert audit["entries"][4]["detail"]["status"] == 409


@STORES
async def test_uninstall_keeps_settings_and_purge_drops_them(
    app: Quart, client: Client, tokens: Tokens
) -> None:
    from isp.plugins.models import PluginRecord

    await upload(client, tokens.admin, stamp_zip())
    await PluginRecord.filter(name="stamp").update(settings={"kept": True})
    assert (await client.delete("/plugins/stamp", headers=auth(tokens.admin))).status_code == 204
    record = await PluginRecord.get(name="stamp")
    assert record.settings == {"kept": True}
    assert await stored_keys(app)  # the zip stays, like the data

    reinstalled = await upload(client, tokens.admin, stamp_zip(version="1.0.1"))
    assert reinstalled.status_code == 201
    assert (await PluginRecord.get(name="stamp")).settings == {"kept": True}

    purged = await client.delete("/plugins/stamp?purge=true", headers=auth(tokens.admin))
    assert purged.status_code == 204
    assert await PluginRecord.get_or_none(name="stamp") is None
    assert await stored_keys(app) == []


@STORES
async def test_upgrade_whose_code_fails_to_import_leaves_the_old_version_serving(
    app: Quart, client: Client, tokens: Tokens, settings: Settings
) -> None:
    await upload(client, tokens.admin, stamp_zip(version="1.0.0"))
    before = snapshot(settings)
    broken = stamp_zip(version="2.0.0", handlers="import not_a_module_anywhere\n")
    response = await upload(client, tokens.admin, broken)
    assert response.status_code == 422
    assert "not_a_module_anywhere" in (await response.get_json())["detail"]
    described = await (await client.get("/plugins/stamp", headers=auth(tokens.admin))).get_json()
    assert described["version"] == "1.0.0"
    assert described["status"] == "active"
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"
    assert snapshot(settings) == before
    assert len(await stored_keys(app)) == 1


# --- the upload pipeline -------------------------------------------------------------


def _good(name: str = "evil") -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    return [(f"{name}/{p}", d.encode()) for p, d in stamp_files(name).items()]


HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "not a zip": (b"this is not a zip file at all", 422, "not a zip"),
    "truncated": (stamp_zip(version="9.0.0")[:200], 422, "zip"),
    "empty zip": (make_zip([]), 422, "empty"),
    "too large": (os.urandom(MAX_UPLOAD + 10), 413, str(MAX_UPLOAD)),
    "zip bomb": (make_zip([*_good(), ("evil/zeros.bin", bytes(20_000_000))]), 422, "evil/zeros"),
    "dot-dot": (make_zip([*_good(), ("evil/../../escape.py", b"x")]), 422, ".."),
    "absolute": (make_zip([*_good(), ("/etc/cron.d/evil", b"x")]), 422, "/etc/cron.d/evil"),
    "drive letter": (make_zip([*_good(), ("C:/evil.py", b"x")]), 422, "C:"),
    "symlink": (
        make_zip([*_good(), (entry("evil/link.py", mode=stat.S_IFLNK | 0o777), b"/etc/passwd")]),
        422, "link",
    ),
    "device": (
        make_zip([*_good(), (entry("evil/tty", mode=stat.S_IFCHR | 0o600), b"")]), 422, "tty"
    ),
    "no manifest": (
        make_zip([("evil/__init__.py", b"from isp.plugins import Plugin\nplugin = Plugin()\n")]),
        422, "manifest.json",
    ),
    "manifest not json": (
        make_zip([("evil/manifest.json", b"{nope"), ("evil/__init__.py", b"")]),
        422, "manifest.json",
    ),
    "name not a slug": (stamp_zip(version="9.0.0", name="Bad-Name"), 422, "Bad-Name"),
    "undeclared hook registered": (
        stamp_zip(version="9.0.0", handlers=STAMP_HANDLERS.format(name="stamp", version="1")
                   + "\n@registry.hook('service_provision')\nasync def p(s, db):\n    pass\n"),
        422, "service_provision",
    ),
    "declared hook not registered": (
        stamp_zip(version="9.0.0", handlers="x = 1\n"), 422, "customer_created",
    ),
    "requires_isp not met": (stamp_zip(version="9.0.0", requires_isp=">=99"), 422, "requires_isp"),
    "import error": (
        stamp_zip(version="9.0.0", handlers="import not_a_module_anywhere\n"), 422, "not_a_module"
    ),
    "two plugins": (make_zip([*_good("one"), *_good("two")]), 422, "folder"),
    "too many entries": (
        make_zip([*_good(), *((f"evil/f{i}.txt", b"") for i in range(1001))]), 422, "entries"
    ),
}  # fmt: skip


@STORES
@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_zip_is_refused_and_changes_nothing(
    app: Quart, client: Client, tokens: Tokens, settings: Settings, case: str
) -> None:
    from tortoise.connection import get_connection

    await upload(client, tokens.admin, stamp_zip(version="1.0.0"))  # something to protect

    async def state() -> tuple[Any, ...]:
        conn = get_connection("default")
        _, records = await conn.execute_query("SELECT * FROM plugin_record ORDER BY name")
        return (snapshot(settings), await stored_keys(app), [dict(r) for r in records])

    before = await state()
    data, status, named = HOSTILE[case]
    response = await upload(client, tokens.admin, data)
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = await response.get_json()
    assert named.lower() in json.dumps(problem).lower()
    assert await state() == before
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"
    newest = await newest_audit(client, tokens.admin)
    assert (newest["action"], newest["detail"]["outcome"]) == ("upload", "refused")
    assert newest["sha256"] == hashlib.sha256(data).hexdigest()
    assert newest["detail"]["status"] == status


async def test_upload_imports_the_plugin_in_the_server_once(
    app: Quart, client: Client, tokens: Tokens, tmp_path: Path
) -> None:
    imports = tmp_path / "imports.log"
    init = (
        "import os\nfrom isp.plugins import Plugin\n"
        f"with open({str(imports)!r}, 'a') as fh:\n    fh.write(f'{{os.getpid()}}\\n')\n"
        "plugin = Plugin()\n"
    )
    files = {**stamp_files(), "__init__.py": init}

    response = await upload(client, tokens.admin, zip_of("stamp", files))

    assert response.status_code == 201, await response.get_data(as_text=True)
    pids = imports.read_text().split()
    assert pids.count(str(os.getpid())) == 1  # the server imported it once
    assert len(pids) == 2  # and the throwaway validating process once, before it
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


async def test_refused_upload_that_patches_the_core_has_no_effect_and_is_audited(
    app: Quart, client: Client, tokens: Tokens, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    evil = (
        "import threading, time\nimport isp.auth.guard\n\n"
        "async def let_anyone_in(token):\n    raise SystemExit\n\n"
        "isp.auth.guard.authenticate = let_anyone_in\n"
        f"open({str(ran)!r}, 'w').close()\n"
        "threading.Thread(target=lambda: time.sleep(3600)).start()\n"
    )  # and no `plugin = Plugin()`
    authenticate = isp.auth.guard.authenticate
    data = zip_of("evil", plugin_files("evil", init=evil))

    response = await upload(client, tokens.admin, data)

    assert response.status_code == 422
    assert "must expose `plugin = Plugin()`" in (await response.get_json())["detail"]
    assert ran.exists()  # the code did run: in the validating process, not here
    assert isp.auth.guard.authenticate is authenticate
    assert not _processes_mentioning(str(tmp_path))  # its thread died with its process
    garbage = await client.get("/plugins", headers=auth("isp_garbage_token"))
    assert garbage.status_code == 401
    entry = await newest_audit(client, tokens.admin)
    assert (entry["action"], entry["plugin"], entry["sha256"]) == (
        "upload", "evil", hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    assert entry["detail"]["outcome"] == "refused"
    assert "must expose" in entry["detail"]["reason"]


@pytest.mark.parametrize("import_timeout", [2.0])
async def test_upload_whose_import_sleeps_is_refused_in_about_the_import_timeout(
    app: Quart, client: Client, tokens: Tokens
) -> None:
    slow = "import time\ntime.sleep(60)\nfrom isp.plugins import Plugin\nplugin = Plugin()\n"
    spin = "while True:\n    pass\n"
    for init in (slow, spin):
        started = time.monotonic()
        data = zip_of("slow", plugin_files("slow", init=init))
        response = await upload(client, tokens.admin, data)
        took = time.monotonic() - started

        assert response.status_code == 422
        assert "did not finish importing within 2 s" in (await response.get_json())["detail"]
        assert 2 <= took < 2 * 4  # about the timeout: not 60 s, nor forever for the spin
        entry = await newest_audit(client, tokens.admin)
        assert (entry["plugin"], entry["detail"]["outcome"]) == ("slow", "refused")
    listed = await (await client.get("/plugins", headers=auth(tokens.admin))).get_json()
    assert "slow" not in [p["name"] for p in listed["plugins"]]


async def test_hook_with_a_wrong_signature_is_refused_at_upload_naming_it(
    app: Quart, client: Client, tokens: Tokens
) -> None:
    handlers = (
        "from isp.plugins import registry\n\n"
        "@registry.hook('service_provision')\n"
        "async def provision(service, db, changes):\n    return None\n"
    )
    files = plugin_files("typo", handlers=handlers, hooks=["service_provision"])

    response = await upload(client, tokens.admin, zip_of("typo", files))

    assert response.status_code == 422
    problem = await response.get_json()
    assert "typo" in problem["detail"]
    assert "handlers.provision takes argument 'changes', which service_provision does not pass" in (
        problem["detail"]
    )
    assert (problem["plugin"], problem["hook"], problem["event"]) == (
        "typo", "handlers.provision", "service_provision",
    )  # fmt: skip


# --- local plugins -------------------------------------------------------------------


@pytest.fixture
async def local_app(database_url: str, tmp_path: Path) -> Any:
    settings = make_settings(database_url, tmp_path)
    write_plugin(settings.plugins_dir, "stamp", stamp_files(version="1.0.0"))
    application = create_app(settings)
    async with application.test_app():
        yield application


async def test_local_plugin_is_never_removed_by_delete(
    local_app: Quart, tmp_path: Path
) -> None:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    client = local_app.test_client()
    await add_user("alice", ["admin"])
    admin = await issue_token("alice", ["admin"])

    response = await client.delete("/plugins/stamp", headers=auth(admin))

    assert response.status_code == 409
    detail = (await response.get_json())["detail"]
    assert "local plugin" in detail
    assert "ISP_PLUGINS_DIR/stamp yourself" in detail
    assert (tmp_path / "plugins" / "stamp" / "handlers.py").is_file()
    described = await (await client.get("/plugins/stamp", headers=auth(admin))).get_json()
    assert described["status"] == "active"


async def test_zip_of_a_local_plugins_files_is_a_no_op_and_a_newer_one_needs_replace_local(
    local_app: Quart, tmp_path: Path
) -> None:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    client = local_app.test_client()
    await add_user("alice", ["admin"])
    await add_user("olga", ["operator"])
    admin = await issue_token("alice", ["admin"])
    operator = await issue_token("olga", ["read", "write"])
    folder = tmp_path / "plugins" / "stamp"

    same = await upload(client, admin, stamp_zip(version="1.0.0"))
    assert same.status_code == 200, await same.get_data(as_text=True)
    assert (await same.get_json())["source"] == "local"

    newer = stamp_zip(version="1.1.0")
    refused = await upload(client, admin, newer)
    assert refused.status_code == 409
    assert "?replace_local=true" in (await refused.get_json())["detail"]
    assert await stamped(client, operator) == "stamp-1.0.0"

    replaced = await upload(client, admin, newer, "?replace_local=true")
    assert replaced.status_code == 200, await replaced.get_data(as_text=True)
    body = await replaced.get_json()
    assert (body["version"], body["source"]) == ("1.1.0", "upload")
    assert await stamped(client, operator) == "stamp-1.1.0"
    kept = list((tmp_path / "data" / "replaced-plugins").iterdir())
    assert [p.name.startswith("stamp-1.0.0-") for p in kept] == [True]
    assert "VERSION = '1.0.0'" in (kept[0] / "handlers.py").read_text()
    assert "VERSION = '1.1.0'" in (folder / "handlers.py").read_text()
    assert not [p for p in (tmp_path / "plugins").iterdir() if p.name.startswith(".")]
