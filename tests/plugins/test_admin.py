"""Plugin administration over HTTP: both stores (local, moto S3) and both databases."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.app import create_app
from isp.config import Settings
from tests.conftest import Tokens, auth, make_settings, s3_settings
from tests.plugins.builders import STAMP_HANDLERS, entry, make_zip, stamp_files, stamp_zip, upload

MAX_UPLOAD = 300_000

@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    s3 = s3_settings(request.getfixturevalue("s3_reset")) if request.param == "s3" else {}
    return make_settings(database_url, tmp_path, plugin_max_upload=MAX_UPLOAD, **s3)


async def stamped(client: Client, token: str) -> str | None:
    response = await client.post("/customers", json={"name": "c"}, headers=auth(token))
    assert response.status_code == 201, await response.get_data(as_text=True)
    return (await response.get_json())["address"]


async def stored_keys(app: Quart) -> list[str]:
    parts = app.extensions["isp"]
    return [o.key for o in await parts.store.list(parts.settings.s3_plugins_bucket)]


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


def snapshot(settings: Settings) -> dict[str, bytes]:
    """Every file under the plugins folder, dot-folders included, with its bytes."""
    found: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(settings.plugins_dir):
        for filename in filenames:
            path = Path(dirpath) / filename
            found[str(path.relative_to(settings.plugins_dir))] = path.read_bytes()
    return found


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
    newest = (await (await client.get("/audit", headers=auth(tokens.admin))).get_json())[
        "entries"
    ][0]
    assert (newest["action"], newest["detail"]["outcome"]) == ("upload", "refused")
    assert newest["sha256"] == hashlib.sha256(data).hexdigest()
    assert newest["detail"]["status"] == status


async def test_upload_without_file_field_is_422(client: Client, tokens: Tokens) -> None:
    response = await client.post("/plugins/upload", headers=auth(tokens.admin))
    assert response.status_code == 422
    assert ["body", "file"] in [e["loc"] for e in (await response.get_json())["errors"]]


CHANGES = [
    ("post", "/plugins/upload"),
    ("put", "/plugins/stamp/enable"),
    ("put", "/plugins/stamp/disable"),
    ("delete", "/plugins/stamp"),
]


@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_every_change_needs_admin_scope_and_plugins_manage(
    app: Quart, client: Client, tokens: Tokens, method: str, path: str
) -> None:
    from isp.auth.roles import add_user, upsert_role
    from isp.auth.tokens import issue_token

    await upload(client, tokens.admin, stamp_zip())
    await upsert_role("auditor", ["admin"])
    await add_user("audrey", ["auditor"])
    auditor = await issue_token("audrey", ["admin"])  # admin scope, no plugins:manage
    call = getattr(client, method)
    assert (await call(path)).status_code == 401
    assert (await call(path, headers=auth(tokens.operator))).status_code == 403
    refused = await call(path, headers=auth(auditor))
    assert refused.status_code == 403
    assert "plugins:manage" in (await refused.get_json())["detail"]
    assert (await client.get("/audit", headers=auth(tokens.operator))).status_code == 403
    described = await (await client.get("/plugins/stamp", headers=auth(auditor))).get_json()
    assert described["status"] == "active"  # nothing changed


async def test_tampered_file_is_detected_at_start_and_missing_folder_restored(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        from isp.auth.roles import add_user
        from isp.auth.tokens import issue_token

        await add_user("alice", ["admin"])
        token = await issue_token("alice", ["admin"])
        await upload(client, token, stamp_zip(name="stamp"))
        await upload(client, token, stamp_zip(name="other"))

    handlers = settings.plugins_dir / "stamp" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\n# a hand edit\n")
    import shutil

    shutil.rmtree(settings.plugins_dir / "other")

    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        stamp = await (await client.get("/plugins/stamp", headers=auth(token))).get_json()
        assert stamp["status"] == "error"
        assert "checksum mismatch" in stamp["error"]
        other = await (await client.get("/plugins/other", headers=auth(token))).get_json()
        assert other["status"] == "active"
        assert (settings.plugins_dir / "other" / "handlers.py").exists()


async def test_instance_behind_an_upgrade_done_elsewhere_fetches_it_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    other = settings.model_copy(update={"plugins_dir": tmp_path / "plugins-other"})
    first = create_app(settings)
    async with first.test_app():
        await add_user("alice", ["admin"])
        token = await issue_token("alice", ["admin"])
        assert (await upload(first.test_client(), token, stamp_zip())).status_code == 201

    second = create_app(other)  # another instance, while the first is down
    async with second.test_app():
        client = second.test_client()
        upgraded = await upload(client, token, stamp_zip(version="2.0.0"))
        assert upgraded.status_code == 200, await upgraded.get_data(as_text=True)

    first = create_app(settings)
    async with first.test_app():
        client = first.test_client()
        stamp = await (await client.get("/plugins/stamp", headers=auth(token))).get_json()
        assert (stamp["status"], stamp["version"]) == ("active", "2.0.0")
        assert await stamped(client, token) == "stamp-2.0.0"
