"""``GET /metrics``: parsed with prometheus_client's own parser, counters match the calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from isp.app import create_app
from isp.config import Settings
from tests.conftest import Tokens, auth, make_settings

METRICS_TOKEN = "scrape-token-0123456789"

GATE = """
from isp.plugins import PluginError, registry


@registry.hook("customer_created")
async def gate(customer, db):
    if customer.name == "refused":
        raise PluginError("no such customers here", status=422)
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A plugin whose hook refuses one customer name, and a scrape token."""
    folder = tmp_path / "plugins" / "gate"
    folder.mkdir(parents=True)
    manifest = {"name": "gate", "version": "2.0.0", "description": "refuses",
                "hooks": ["customer_created"]}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "__init__.py").write_text("from isp.plugins import Plugin\n\nplugin = Plugin()\n")
    (folder / "handlers.py").write_text(GATE)
    return make_settings(database_url, tmp_path, metrics_token=METRICS_TOKEN)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    application = create_app(settings)
    async with application.test_app():
        yield application


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: Any, token: str) -> dict[Any, float]:
    response = await client.get("/metrics", headers=auth(token))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(await response.get_data(as_text=True))


async def test_metrics_count_hook_calls_workflows_and_requests(client: Any, tokens: Tokens) -> None:
    headers = auth(tokens.operator)
    for name in ("ann", "bob", "refused"):
        await client.post("/customers", json={"name": name}, headers=headers)
    assert (await client.get("/customers/999999", headers=headers)).status_code == 404
    for name in ("r1", "r2"):
        body = {"name": name, "vendor": "mikrotik", "host": "192.0.2.1", "port": 22,
                "username": "admin", "password": "pw"}  # fmt: skip
        assert (await client.post("/devices", json=body, headers=headers)).status_code == 201

    found = await scrape(client, tokens.reader)

    hook = {"plugin": "gate", "hook": "handlers.gate", "event": "customer_created"}
    assert value(found, "isp_hook_calls_total", **hook, outcome="ok") == 2
    assert value(found, "isp_hook_calls_total", **hook, outcome="error") == 1
    assert value(found, "isp_hook_calls_total", **hook, outcome="timeout") == 0
    assert value(found, "isp_hook_duration_seconds_count", **hook) == 3
    assert value(found, "isp_hook_duration_seconds_bucket", **hook, le="+Inf") == 3
    workflow = "isp_workflows_total"
    assert value(found, workflow, event="customer_created", outcome="ok") == 2
    assert value(found, workflow, event="customer_created", outcome="failed") == 1
    requests = "isp_http_requests_total"
    assert value(found, requests, route="/customers", method="POST", status="201") == 2
    assert value(found, requests, route="/customers", method="POST", status="422") == 1
    assert value(found, requests, route="/devices", method="POST", status="201") == 2
    missing = {"route": "/customers/<int:customer_id>", "method": "GET"}
    assert value(found, requests, **missing, status="404") == 1
    assert value(found, "isp_http_request_duration_seconds_count", **missing) == 1
    assert value(found, "isp_devices_backup_stale") == 2
    info = {"plugin": "gate", "version": "2.0.0", "status": "active", "isolation": "in_process"}
    assert value(found, "isp_plugin_info", **info) == 1

    again = await scrape(client, tokens.reader)  # the first scrape is counted too
    assert value(again, requests, route="/metrics", method="GET", status="200") == 1


async def test_metrics_need_a_read_token_or_the_metrics_token(client: Any, tokens: Tokens) -> None:
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=auth("wrong"))).status_code == 401
    response = await client.get("/metrics", headers=auth(METRICS_TOKEN))
    assert response.status_code == 200
    assert "isp_http_requests_total" in await response.get_data(as_text=True)
    assert (await client.get("/metrics", headers=auth(tokens.reader))).status_code == 200
