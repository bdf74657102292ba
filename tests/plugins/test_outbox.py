"""After-commit hooks over HTTP, SQLite and PostgreSQL: delivered once the workflow
committed, never for one that rolled back; failures retried, then ``failed`` until
``POST /outbox/{id}/retry``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.config import Settings
from isp.core.models import Customer
from isp.plugins.models import OutboxRow
from tests.conftest import NULL_ROUTER, Tokens, auth, install_plugin, make_settings
from tests.core.test_api import create_records
from tests.plugins.builders import (
    eventually,
    ledger_files,
    ledger_notes,
    plugin_files,
    write_plugin,
)

REFUSER = """
from isp.plugins import PluginError, registry

@registry.hook("service_provision")
async def refuse(service, db):
    raise PluginError("no free port on the access router")
"""


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    folder = tmp_path / "ledger"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(database_url: str, tmp_path: Path, ledger: Path) -> Settings:
    settings = make_settings(
        database_url, tmp_path, outbox_attempts=3, outbox_backoff=0.05, outbox_poll_interval=0.2
    )
    write_plugin(settings.plugins_dir, "ledger", ledger_files(ledger))
    install_plugin(NULL_ROUTER, settings)
    return settings


def done(ledger: Path, event: str | None = None) -> list[dict[str, Any]]:
    return [n for n in ledger_notes(ledger) if n["what"] == "done" and event in (None, n["event"])]


async def customer(client: Client, tokens: Tokens, name: str = "Ada") -> int:
    response = await client.post("/customers", json={"name": name}, headers=auth(tokens.operator))
    assert response.status_code == 201, await response.get_data(as_text=True)
    return int((await response.get_json())["id"])


async def outbox(client: Client, tokens: Tokens, status: str) -> list[dict[str, Any]]:
    response = await client.get(f"/outbox?status={status}", headers=auth(tokens.admin))
    body = await response.get_json()
    assert response.status_code == 200, body
    rows: list[dict[str, Any]] = body["outbox"]
    return rows


async def outbox_all(client: Client, tokens: Tokens, count: int) -> list[dict[str, Any]] | None:
    """Every outbox row, once there are ``count`` and none is pending."""
    response = await client.get("/outbox", headers=auth(tokens.admin))
    rows: list[dict[str, Any]] = (await response.get_json())["outbox"]
    return rows if len(rows) == count and all(r["status"] != "pending" for r in rows) else None


async def test_a_committed_workflow_is_delivered_once_after_the_commit(
    client: Client, tokens: Tokens, ledger: Path
) -> None:
    customer_id = await customer(client, tokens)
    [note] = await eventually(lambda: done(ledger))
    assert (note["id"], note["event"], note["attempt"]) == (customer_id, "customer_created", 1)
    assert [n["what"] for n in ledger_notes(ledger)] == ["started", "done"]
    [row] = await eventually(lambda: outbox(client, tokens, "delivered"))
    assert await outbox(client, tokens, "pending") == []
    assert row["key"] == note["key"]
    assert (row["plugin"], row["hook"], row["status"]) == (
        "ledger",
        "handlers.on_customer",
        "delivered",
    )


@pytest.fixture
def refuser(settings: Settings) -> None:
    """A plugin whose critical provisioning hook refuses, on disk before start."""
    files = plugin_files("refuser", handlers=REFUSER, hooks=["service_provision"])
    write_plugin(settings.plugins_dir, "refuser", files)


@pytest.mark.usefixtures("refuser")
async def test_an_after_commit_hook_never_runs_for_a_rolled_back_workflow(
    client: Client, tokens: Tokens, ledger: Path
) -> None:
    ids = await create_records(client, tokens.operator)
    response = await client.post(
        f"/services/{ids['service_id']}/provision", headers=auth(tokens.operator)
    )
    assert response.status_code == 422, await response.get_data(as_text=True)
    assert (await response.get_json())["plugin"] == "refuser"
    # A later workflow's delivery is the sign the deliverer ran past the refused one.
    later = await customer(client, tokens, "Later")
    await eventually(lambda: [n for n in done(ledger) if n["id"] == later])
    assert [n["event"] for n in ledger_notes(ledger)] == ["customer_created"] * 4
    assert len(done(ledger)) == 2  # create_records' customer and the later one
    rows = await eventually(lambda: outbox_all(client, tokens, count=2))
    assert [r["event"] for r in rows] == ["customer_created"] * 2  # no provision row at all


async def test_a_delivery_that_fails_three_times_is_failed_and_a_retry_delivers_it(
    client: Client, tokens: Tokens, ledger: Path
) -> None:
    (ledger / "refuse").write_text("3")  # ISP_OUTBOX_ATTEMPTS=3: every attempt refused
    customer_id = await customer(client, tokens)

    [row] = await eventually(lambda: outbox(client, tokens, "failed"))
    assert (row["event"], row["plugin"], row["hook"]) == (
        "customer_created",
        "ledger",
        "handlers.on_customer",
    )
    assert row["attempts"] == 3
    assert row["last_error"] == "refused (0 refusals left)"
    assert set(row) >= {"id", "event", "plugin", "hook", "attempts", "status", "last_error",
                        "created_at"}  # fmt: skip
    attempts = [n["attempt"] for n in ledger_notes(ledger) if n["what"] == "started"]
    assert attempts == [1, 2, 3]
    assert done(ledger) == []

    forbidden = await client.post(f"/outbox/{row['id']}/retry", headers=auth(tokens.operator))
    assert forbidden.status_code == 403
    retried = await client.post(f"/outbox/{row['id']}/retry", headers=auth(tokens.admin))
    assert retried.status_code == 202, await retried.get_data(as_text=True)
    assert (await retried.get_json())["status"] == "pending"

    [note] = await eventually(lambda: done(ledger))
    assert (note["id"], note["attempt"], note["key"]) == (customer_id, 4, row["key"])
    assert await outbox(client, tokens, "failed") == []
    await eventually(lambda: outbox(client, tokens, "delivered"))
    again = await client.post(f"/outbox/{row['id']}/retry", headers=auth(tokens.admin))
    assert again.status_code == 409
    audit = await (await client.get("/audit", headers=auth(tokens.admin))).get_json()
    [entry] = [e for e in audit["entries"] if e["action"] == "outbox_retry"]
    assert (entry["actor"], entry["plugin"], entry["detail"]["outbox_id"]) == (
        "alice",
        "ledger",
        row["id"],
    )


async def test_outbox_queries_are_checked(client: Client, tokens: Tokens) -> None:
    bad = await client.get("/outbox?status=lost", headers=auth(tokens.admin))
    assert bad.status_code == 422
    assert (await bad.get_json())["errors"][0]["loc"] == ["query", "status"]
    missing = await client.post("/outbox/999/retry", headers=auth(tokens.admin))
    assert missing.status_code == 404
    reader = await client.get("/outbox", headers=auth(tokens.reader))
    assert reader.status_code == 403


async def test_deliveries_for_one_object_keep_commit_order(
    client: Client, tokens: Tokens, ledger: Path
) -> None:
    (ledger / "hold").touch()  # the first delivery waits: the later ones queue behind it
    customer_id = await customer(client, tokens)
    await eventually(lambda: ledger_notes(ledger))
    for phone in ("+1 555 0101", "+1 555 0102"):
        response = await client.patch(
            f"/customers/{customer_id}", json={"phone": phone}, headers=auth(tokens.operator)
        )
        assert response.status_code == 200, await response.get_data(as_text=True)
    other = await customer(client, tokens, "Other")  # another object does not wait
    await eventually(lambda: [n for n in ledger_notes(ledger) if n["id"] == other])
    (ledger / "hold").unlink()

    await eventually(lambda: len(done(ledger)) == 4)
    mine = [(n["what"], n["event"]) for n in ledger_notes(ledger) if n["id"] == customer_id]
    assert mine == [
        ("started", "customer_created"),
        ("done", "customer_created"),
        ("started", "customer_updated"),
        ("done", "customer_updated"),
        ("started", "customer_updated"),
        ("done", "customer_updated"),
    ]
    keys = [n["key"] for n in done(ledger) if n["id"] == customer_id]
    rows = await eventually(lambda: outbox_all(client, tokens, count=4))
    assert [r["key"] for r in rows if r["key"] in keys] == keys  # id (commit) order


async def test_delivered_rows_are_kept_for_a_while_then_pruned(
    app: Quart, client: Client, tokens: Tokens, ledger: Path
) -> None:
    first = await customer(client, tokens, "Old")
    await customer(client, tokens, "Recent")
    old, _ = await eventually(lambda: outbox_all(client, tokens, count=2))
    await OutboxRow.filter(id=old["id"]).update(
        delivered_at=datetime.now(UTC) - timedelta(days=8)
    )
    await app.extensions["isp.outbox"].prune()
    [kept] = (await (await client.get("/outbox", headers=auth(tokens.admin))).get_json())["outbox"]
    assert kept["id"] != old["id"]
    assert first in {n["id"] for n in done(ledger)}


async def test_a_quarantined_plugins_deliveries_wait_pending_until_it_is_enabled_again(
    app: Quart, client: Client, tokens: Tokens, ledger: Path
) -> None:
    app.extensions["isp.plugins"].registry.quarantine("ledger", "a hook outlived its deadline")
    customer_id = await customer(client, tokens)  # the workflow itself is not refused

    [row] = await outbox(client, tokens, "pending")  # written in the workflow's transaction
    assert await app.extensions["isp.outbox"].claim() == []  # what every poll finds
    [held] = await outbox(client, tokens, "pending")
    assert (held["id"], held["attempts"], held["last_error"]) == (row["id"], 0, None)
    assert ledger_notes(ledger) == []  # the plugin's code did not run

    enabled = await client.put("/plugins/ledger/enable", headers=auth(tokens.admin))
    assert enabled.status_code == 200, await enabled.get_data(as_text=True)
    [note] = await eventually(lambda: done(ledger))
    assert (note["id"], note["attempt"], note["key"]) == (customer_id, 1, row["key"])


async def test_a_delivery_claimed_before_the_quarantine_is_given_back_untried(
    app: Quart, client: Client, tokens: Tokens, ledger: Path
) -> None:
    from isp.plugins import outbox as deliveries

    box = app.extensions["isp.outbox"]
    await box.stop()  # nothing delivers behind the test's back
    await deliveries.enqueue(
        deliveries.AFTER_COMMIT, event="customer_created", plugin="ledger",
        hook="handlers.on_customer", subject=await Customer.create(name="Ada"),
    )  # fmt: skip
    [claimed] = await box.claim()
    assert claimed.attempts == 1
    app.extensions["isp.plugins"].registry.quarantine("ledger", "a hook outlived its deadline")

    await box._deliver(deliveries.Claimed.of(claimed))
    row = await OutboxRow.get(id=claimed.id)
    assert (row.status, row.attempts, row.claimed_by, row.last_error) == ("pending", 0, None, None)
    assert ledger_notes(ledger) == []
