"""The OpenAPI document is valid OpenAPI and describes every route the app serves."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from quart import Quart
from quart.typing import TestClientProtocol as Client


async def test_openapi_document_validates_and_covers_every_route(
    app: Quart, client: Client
) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    validate(document)
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "openapi", "QUART_SCHEMA_OPENAPI") or "openapi" in rule.rule:
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            for code, response in responses.items():
                if code[0] in "45":
                    assert "application/problem+json" in response["content"], (method, path, code)
            if "{" in path:
                assert "404" in responses, (method, path)
            if operation.get("security") != []:
                assert {"401", "403"} <= set(responses), (method, path)
    upload = document["paths"]["/plugins/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    listed = {p["name"] for p in document["paths"]["/services"]["get"]["parameters"]}
    assert listed == {"limit", "after", "status", "customer_id", "device_id", "plan_id"}
