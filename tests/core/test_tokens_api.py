"""Tokens over HTTP on both databases: issue, list, revoke, expiry, the admin re-check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quart.typing import TestClientProtocol as Client

from isp.auth.models import ApiToken
from tests.conftest import Tokens, auth


async def test_issue_list_and_revoke_own_token(client: Client, tokens: Tokens) -> None:
    issued = await client.post(
        "/tokens", json={"scopes": ["read"], "expires_in_days": 7}, headers=auth(tokens.operator)
    )
    assert issued.status_code == 201, await issued.get_data(as_text=True)
    body = await issued.get_json()
    assert body["scopes"] == ["read"]
    assert body["token"].startswith(f"isp_{body['prefix']}_")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    new = body["token"]
    assert (await client.get("/customers", headers=auth(new))).status_code == 200
    assert (
        await client.post("/customers", json={"name": "x"}, headers=auth(new))
    ).status_code == 403

    listed = await (await client.get("/tokens", headers=auth(new))).get_json()
    prefixes = {t["prefix"] for t in listed["tokens"]}
    assert body["prefix"] in prefixes
    assert {t["user"] for t in listed["tokens"]} == {"olga"}
    assert "token" not in listed["tokens"][0]
    assert any(t["last_used_at"] for t in listed["tokens"] if t["prefix"] == body["prefix"])

    revoked = await client.delete(f"/tokens/{body['prefix']}", headers=auth(tokens.operator))
    assert revoked.status_code == 204
    refused = await client.get("/customers", headers=auth(new))  # at once, on this instance
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers
    assert "headers_hint" not in await refused.get_json()
    row = await ApiToken.get(prefix=body["prefix"])
    assert row.revoked_at is not None


async def test_scopes_no_wider_than_the_callers(client: Client, tokens: Tokens) -> None:
    wider = await client.post("/tokens", json={"scopes": ["write"]}, headers=auth(tokens.reader))
    assert wider.status_code == 403
    admin = await client.post("/tokens", json={"scopes": ["admin"]}, headers=auth(tokens.operator))
    assert admin.status_code == 403
    bad = await client.post("/tokens", json={"scopes": ["root"]}, headers=auth(tokens.operator))
    assert bad.status_code == 422
    days = await client.post("/tokens", json={"expires_in_days": 0}, headers=auth(tokens.operator))
    assert days.status_code == 422
    default = await client.post("/tokens", json={}, headers=auth(tokens.reader))
    assert (await default.get_json())["scopes"] == ["read"]


async def test_others_tokens_only_with_admin(client: Client, tokens: Tokens) -> None:
    admin_view = await (await client.get("/tokens", headers=auth(tokens.admin))).get_json()
    assert {t["user"] for t in admin_view["tokens"]} == {"alice", "olga", "rita"}
    olga = next(t["prefix"] for t in admin_view["tokens"] if t["user"] == "olga")
    other = await client.delete(f"/tokens/{olga}", headers=auth(tokens.reader))
    assert other.status_code == 404
    assert (await client.get("/customers", headers=auth(tokens.operator))).status_code == 200
    by_admin = await client.delete(f"/tokens/{olga}", headers=auth(tokens.admin))
    assert by_admin.status_code == 204
    assert (await client.get("/customers", headers=auth(tokens.operator))).status_code == 401
    assert (await client.delete("/tokens/zz%00", headers=auth(tokens.admin))).status_code == 404
    page = await (await client.get("/tokens?limit=1", headers=auth(tokens.admin))).get_json()
    assert len(page["tokens"]) == 1
    assert page["next"] is not None


async def test_expired_token_is_refused(client: Client, tokens: Tokens) -> None:
    issued = await (
        await client.post("/tokens", json={"expires_in_days": 1}, headers=auth(tokens.operator))
    ).get_json()
    assert (await client.get("/plans", headers=auth(issued["token"]))).status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    await ApiToken.filter(prefix=issued["prefix"]).update(expires_at=past)
    from isp.auth.tokens import token_cache

    token_cache.clear()  # the row changed behind this instance's back, as on another instance
    refused = await client.get("/plans", headers=auth(issued["token"]))
    assert refused.status_code == 401
    assert "expired" in (await refused.get_json())["detail"]


async def test_admin_permission_rechecked_on_every_admin_request(
    client: Client, tokens: Tokens
) -> None:
    from isp.auth.roles import add_user, upsert_role
    from isp.auth.tokens import issue_token

    await upsert_role("auditor", ["admin"])
    await add_user("audrey", ["auditor"])
    token = await issue_token("audrey", ["admin"])
    assert (await client.get("/audit", headers=auth(token))).status_code == 200
    assert (await client.get("/users", headers=auth(token))).status_code == 200
    await upsert_role("auditor", ["customers:write"])
    for path in ("/audit", "/users", "/plugins"):
        refused = await client.get(path, headers=auth(token))
        assert refused.status_code == 403, path
        assert "admin" in (await refused.get_json())["detail"]


async def test_users_list(client: Client, tokens: Tokens) -> None:
    body = await (await client.get("/users", headers=auth(tokens.admin))).get_json()
    assert [(u["name"], u["roles"]) for u in body["users"]] == [
        ("alice", ["admin"]),
        ("olga", ["operator"]),
        ("rita", ["operator"]),
    ]
    assert (await client.get("/users", headers=auth(tokens.operator))).status_code == 403


def test_a_lookup_that_began_before_a_revocation_is_not_cached() -> None:
    """On the revoking instance, a lookup that read the row before the revocation and
    answers after it would otherwise put the revoked token back for the cache interval."""
    from isp.auth.tokens import Principal, TokenCache

    cache = TokenCache(ttl=60)
    principal = Principal(1, "olga", "abcd1234", frozenset({"read"}), frozenset())
    began = cache.generation
    cache.forget({"abcd1234"})  # the revocation, while the lookup is in flight
    cache.put("hash", principal, began)
    assert cache.get("hash") is None
    cache.put("hash", principal, cache.generation)
    assert cache.get("hash") == principal
