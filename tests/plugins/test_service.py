"""The upload pipeline: validated out of the server, imported in it once, every attempt audited;
and the rules for local plugins (folders put in ISP_PLUGINS_DIR by hand)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from werkzeug.datastructures import FileStorage

import isp.auth.guard
from isp.app import create_app
from isp.config import Settings
from tests.conftest import Tokens, auth, make_settings
from tests.plugins.builders import plugin_files, write_plugin, zip_of

STAMP = """
from isp.plugins import registry

@registry.hook("customer_created")
async def stamp(customer, db):
    customer.address = "stamp-{version}"
    await customer.save(using_db=db, update_fields=["address"])
"""


def stamp_files(version: str = "1.0.0") -> dict[str, str]:
    return plugin_files(
        "stamp", version, handlers=STAMP.format(version=version), hooks=["customer_created"]
    )


async def upload(client: Client, token: str, data: bytes, query: str = "") -> Any:
    return await client.post(
        f"/plugins/upload{query}",
        files={"file": FileStorage(io.BytesIO(data), filename="plugin.zip",
                                   content_type="application/zip")},
        headers=auth(token),
    )  # fmt: skip


async def newest_audit(client: Client, token: str) -> dict[str, Any]:
    entries = (await (await client.get("/audit", headers=auth(token))).get_json())["entries"]
    return dict(entries[0])


async def stamped(client: Client, token: str) -> str | None:
    response = await client.post("/customers", json={"name": "c"}, headers=auth(token))
    assert response.status_code == 201, await response.get_data(as_text=True)
    return (await response.get_json())["address"]


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


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, plugin_import_timeout=2)


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
        assert 2 <= took < 6
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
    write_plugin(settings.plugins_dir, "stamp", stamp_files("1.0.0"))
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

    same = await upload(client, admin, zip_of("stamp", stamp_files("1.0.0")))
    assert same.status_code == 200, await same.get_data(as_text=True)
    assert (await same.get_json())["source"] == "local"

    newer = zip_of("stamp", stamp_files("1.1.0"))
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
    assert "stamp-1.0.0" in (kept[0] / "handlers.py").read_text()
    assert "stamp-1.1.0" in (folder / "handlers.py").read_text()
    assert not [p for p in (tmp_path / "plugins").iterdir() if p.name.startswith(".")]
