"""PluginSync: at start-up an instance checks its plugins' files against the records and
fetches what it lacks (both databases, both object stores); across instances, two real
server processes on one PostgreSQL and one S3 server converge within 5 s."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from isp.app import create_app
from isp.config import Settings
from tests.conftest import TEST_SECRET_KEY, auth
from tests.plugins import builders
from tests.plugins.builders import free_port, stamp_zip, stamped, start_server, until, upload
from tests.plugins.conftest import STORES
from tests.s3server import S3_ACCESS_KEY, S3_SECRET_KEY

CONVERGENCE = 5.0

TUNED_INIT = """
from pydantic import BaseModel
from isp.plugins import Plugin


class Tuning(BaseModel):
    label: str = "default"


plugin = Plugin(settings=Tuning)
"""

TUNED_HANDLERS = """
from isp.plugins import registry

from . import plugin


@registry.hook("customer_created")
async def label(customer, db):
    customer.phone = plugin.settings.label
    await customer.save(using_db=db, update_fields=["phone"])
"""


async def first_admin_token() -> str:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    await add_user("alice", ["admin"])
    return await issue_token("alice", ["admin"])


@STORES
async def test_tampered_file_is_detected_at_start_and_missing_folder_restored(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        token = await first_admin_token()
        await upload(client, token, stamp_zip(name="stamp"))
        await upload(client, token, stamp_zip(name="other"))

    handlers = settings.plugins_dir / "stamp" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\n# a hand edit\n")
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


@STORES
async def test_instance_behind_an_upgrade_done_elsewhere_fetches_it_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    other = settings.model_copy(update={"plugins_dir": tmp_path / "plugins-other"})
    first = create_app(settings)
    async with first.test_app():
        token = await first_admin_token()
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


# Imported in the server once `go` exists, it waits for its partner's import to begin:
# imported one after the other, the first would wait past the import timeout.
PARTNER_INIT = """
import sys, time
from pathlib import Path
from isp.plugins import Plugin

markers = Path({markers!r})
if (markers / "go").exists() and not sys.argv[0].endswith("candidate.py"):
    (markers / {name!r}).touch()
    deadline = time.monotonic() + 60
    while not (markers / {partner!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
plugin = Plugin()
"""


async def test_plugins_fetched_at_start_import_side_by_side(
    settings: Settings, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    pair = {"left": "right", "right": "left"}
    first = create_app(settings)
    async with first.test_app():
        token = await first_admin_token()
        for name, partner in pair.items():
            init = PARTNER_INIT.format(markers=str(markers), name=name, partner=partner)
            files = {**builders.stamp_files(name), "__init__.py": init}
            installed = await upload(first.test_client(), token, builders.zip_of(name, files))
            assert installed.status_code == 201, await installed.get_data(as_text=True)
    for name in pair:  # a wiped disk: the next start fetches both from the object store
        shutil.rmtree(settings.plugins_dir / name)
    (markers / "go").touch()

    again = create_app(settings.model_copy(update={"plugin_import_timeout": 5}))
    async with again.test_app():
        client = again.test_client()
        listed = await (await client.get("/plugins", headers=auth(token))).get_json()
        served = {p["name"]: (p["status"], p["error"]) for p in listed["plugins"]}
        assert served == {"left": ("active", None), "right": ("active", None)}


def tuned_zip() -> bytes:
    """A plugin whose hook shows its current setting in the customer's phone field."""
    files = builders.plugin_files(
        "tuned",
        init=TUNED_INIT,
        handlers=TUNED_HANDLERS,
        hooks=["customer_created"],
        description="settings",
    )
    return builders.zip_of("tuned", files)


async def isp(*args: str, env: dict[str, str]) -> str:
    return (await builders.isp(*args, env=env))[1]


@pytest.fixture
async def shared_database(pg_url: str) -> AsyncIterator[str]:
    name = f"isp_instances_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


class Instances:
    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def instances(
    shared_database: str, s3_reset: str, tmp_path: Path
) -> AsyncIterator[Instances]:
    base = {
        **os.environ,
        "ISP_DATABASE_URL": shared_database,
        "ISP_S3_ENDPOINT_URL": s3_reset,
        "ISP_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "ISP_S3_SECRET_KEY": S3_SECRET_KEY,
        "ISP_SECRET_KEY": TEST_SECRET_KEY,
        "ISP_PLUGIN_RELOAD": "false",
        "ISP_PLUGIN_UNSIGNED": "allow",  # the stamp writes the customer: it runs in process
        "ISP_LOG_LEVEL": "WARNING",
    }
    envs = []
    for n in (1, 2):
        envs.append({**base, "ISP_DATA_DIR": str(tmp_path / f"data{n}"),
                     "ISP_PLUGINS_DIR": str(tmp_path / f"plugins{n}")})  # fmt: skip
        (tmp_path / f"plugins{n}").mkdir()
    await isp("user", "add", "alice", "--role", "admin", env=envs[0])
    token = (await isp("token", "issue", "alice", "--scope", "admin", env=envs[0])).split()[-1]
    ports = [free_port(), free_port()]
    processes = [
        await start_server(port, env)
        for port, env in zip(ports, envs, strict=True)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for url in urls:
                await until(lambda u=url: _ready(client, u), within=30)
        yield Instances(urls, token)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=15)


async def _ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_changes_on_one_instance_are_served_by_the_other_within_5_s(
    instances: Instances,
) -> None:
    first, second = instances.urls
    async with httpx.AsyncClient(headers=instances.headers, timeout=10) as client:

        async def plugin_on_second() -> dict[str, Any]:
            response = await client.get(f"{second}/plugins/stamp")
            return response.json() if response.status_code == 200 else {}

        async def stamp_on_second() -> Any:
            created = await client.post(f"{second}/customers", json={"name": "c"})
            assert created.status_code == 201
            return created.json()["address"]

        def holds(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return predicate(await plugin_on_second())

            return check

        files = {"file": ("stamp.zip", stamp_zip(version="1.0.0"), "application/zip")}
        installed = await client.post(f"{first}/plugins/upload", files=files)
        assert installed.status_code == 201, installed.text
        took = await until(holds(lambda p: p.get("status") == "active"), CONVERGENCE)
        assert await stamp_on_second() == "stamp-1.0.0"

        files = {"file": ("stamp.zip", stamp_zip(version="1.1.0"), "application/zip")}
        upgraded = await client.post(f"{first}/plugins/upload", files=files)
        assert upgraded.status_code == 200, upgraded.text
        await until(holds(lambda p: p.get("version") == "1.1.0"), CONVERGENCE)
        assert await stamp_on_second() == "stamp-1.1.0"

        disabled = await client.put(f"{first}/plugins/stamp/disable")
        assert disabled.status_code == 200
        await until(holds(lambda p: p.get("status") == "disabled"), CONVERGENCE)
        assert await stamp_on_second() is None

        enabled = await client.put(f"{first}/plugins/stamp/enable")
        assert enabled.status_code == 200
        await until(holds(lambda p: p.get("status") == "active"), CONVERGENCE)

        files = {"file": ("tuned.zip", tuned_zip(), "application/zip")}
        assert (await client.post(f"{first}/plugins/upload", files=files)).status_code == 201
        changed = await client.put(f"{first}/plugins/tuned/settings", json={"label": "from-first"})
        assert changed.status_code == 200, changed.text

        async def second_sees_the_new_setting() -> bool:
            created = await client.post(f"{second}/customers", json={"name": "c"})
            return bool(created.status_code == 201 and created.json()["phone"] == "from-first")

        await until(second_sees_the_new_setting, CONVERGENCE)

        removed = await client.delete(f"{first}/plugins/stamp")
        assert removed.status_code == 204
        await until(holds(lambda p: p == {}), CONVERGENCE)
        assert await stamp_on_second() is None
    assert took < CONVERGENCE
