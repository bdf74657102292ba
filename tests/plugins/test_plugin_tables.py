"""A plugin with its own table, installed through the API while the service runs."""

from __future__ import annotations

import io
import json
import zipfile

from quart import Quart
from quart.typing import TestClientProtocol as Client
from tortoise.connection import get_connection

from tests.conftest import Tokens, auth
from tests.plugins.builders import table_files, upload

HANDLERS = """
from isp.plugins import registry

from .models import Note


@registry.hook("customer_created")
async def remember(customer, db):
    await Note.create(customer_id=customer.id, text=f"welcome {customer.name}", using_db=db)
"""


def notes_zip(version: str, table: str = "notes_note") -> bytes:
    manifest = {"name": "notes", "version": version, "description": "notes",
                "hooks": ["customer_created"]}  # fmt: skip
    files = {
        "manifest.json": json.dumps(manifest),
        "__init__.py": "from isp.plugins import Plugin\n\nplugin = Plugin()\n",
        "handlers.py": HANDLERS,
        **table_files("notes", table),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            archive.writestr(f"notes/{path}", text)
    return buffer.getvalue()


async def notes() -> list[str]:
    _, rows = await get_connection("default").execute_query(
        "SELECT text FROM notes_note ORDER BY id"
    )
    return [row["text"] for row in rows]


async def table_exists() -> bool:
    conn = get_connection("default")
    if conn.capabilities.dialect == "sqlite":
        _, rows = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'notes_note'"
        )
    else:
        _, rows = await conn.execute_query(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'notes_note'"
        )
    return bool(rows)


async def add_customer(client: Client, token: str, name: str) -> None:
    response = await client.post("/customers", json={"name": name}, headers=auth(token))
    assert response.status_code == 201, await response.get_data(as_text=True)


async def test_plugin_table_created_at_install_written_through_db_kept_and_purged(
    app: Quart, client: Client, tokens: Tokens
) -> None:
    assert not await table_exists()
    installed = await upload(client, tokens.admin, notes_zip("1.0.0"))
    assert installed.status_code == 201, await installed.get_data(as_text=True)
    await add_customer(client, tokens.operator, "Ada")
    assert await notes() == ["welcome Ada"]

    removed = await client.delete("/plugins/notes", headers=auth(tokens.admin))
    assert removed.status_code == 204
    assert await notes() == ["welcome Ada"]  # uninstall keeps the data
    await add_customer(client, tokens.operator, "Bob")  # no plugin, no note

    again = await upload(client, tokens.admin, notes_zip("1.0.1"))
    assert again.status_code == 201, await again.get_data(as_text=True)
    await add_customer(client, tokens.operator, "Cy")
    assert await notes() == ["welcome Ada", "welcome Cy"]

    purged = await client.delete("/plugins/notes?purge=true", headers=auth(tokens.admin))
    assert purged.status_code == 204
    assert not await table_exists()
    _, rows = await get_connection("default").execute_query(
        "SELECT name FROM tortoise_migrations WHERE app = 'plugin_notes'"
    )
    assert rows == []

    fresh = await upload(client, tokens.admin, notes_zip("1.0.2"))
    assert fresh.status_code == 201
    await add_customer(client, tokens.operator, "Di")
    assert await notes() == ["welcome Di"]  # a new, empty table


async def test_a_failing_hook_rolls_back_the_plugin_rows_too(
    app: Quart, client: Client, tokens: Tokens, settings: object
) -> None:
    assert (await upload(client, tokens.admin, notes_zip("1.0.0"))).status_code == 201
    refuser = io.BytesIO()
    with zipfile.ZipFile(refuser, "w") as archive:
        manifest = {"name": "refuser", "version": "1.0.0", "description": "says no",
                    "hooks": ["customer_created"]}  # fmt: skip
        archive.writestr("refuser/manifest.json", json.dumps(manifest))
        archive.writestr(
            "refuser/__init__.py", "from isp.plugins import Plugin\nplugin = Plugin()\n"
        )
        archive.writestr(
            "refuser/handlers.py",
            "import asyncio\nfrom isp.plugins import registry, PluginError\n\n"
            "@registry.hook('customer_created')\nasync def no(customer, db):\n"
            "    await asyncio.sleep(0.05)\n    raise PluginError('not today')\n",
        )
    assert (await upload(client, tokens.admin, refuser.getvalue())).status_code == 201
    response = await client.post("/customers", json={"name": "Eve"}, headers=auth(tokens.operator))
    assert response.status_code == 422
    assert await notes() == []


async def test_install_failing_after_its_migrations_ran_undoes_them(
    app: Quart, client: Client, tokens: Tokens
) -> None:
    unprefixed = notes_zip("1.0.0", table="note")
    response = await upload(client, tokens.admin, unprefixed)
    assert response.status_code == 422, await response.get_data(as_text=True)
    assert "Meta.table" in (await response.get_json())["detail"]
    conn = get_connection("default")
    if conn.capabilities.dialect == "sqlite":
        _, rows = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'note'"
        )
    else:
        _, rows = await conn.execute_query(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'note'"
        )
    assert rows == []
    _, rows = await conn.execute_query(
        "SELECT name FROM tortoise_migrations WHERE app = 'plugin_notes'"
    )
    assert rows == []
    assert (await client.get("/plugins/notes", headers=auth(tokens.admin))).status_code == 404
