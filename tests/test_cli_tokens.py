"""``isp token list|revoke|issue --expires-in-days`` and ``isp user list``, as processes."""

from __future__ import annotations

from pathlib import Path

from isp.app import create_app
from tests.conftest import auth, make_settings
from tests.test_cli import cli_env, isp


async def test_token_issue_list_revoke_and_user_list(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path)
    assert (await isp("user", "add", "alice", "--role", "admin", env=env))[0] == 0
    assert (await isp("user", "add", "olga", "--role", "operator", env=env))[0] == 0
    code, out, err = await isp("token", "issue", "olga", "--expires-in-days", "30", env=env)
    assert code == 0, err
    assert "expires in 30 days" in out
    token = out.strip().splitlines()[-1]
    prefix = token.split("_")[1]

    code, out, _ = await isp("token", "list", env=env)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(prefix))
    assert "olga" in row
    assert "read,write" in row

    code, out, _ = await isp("user", "list", env=env)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["alice", "admin"]
    assert lines[1].split()[:2] == ["olga", "operator"]

    app = create_app(make_settings(database_url, tmp_path))
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/customers", headers=auth(token))).status_code == 200
        code, out, err = await isp("token", "revoke", prefix, env=env)
        assert code == 0, err
        assert f"revoked token {prefix}" in out
        from isp.auth.tokens import token_cache

        token_cache.clear()  # another process revoked it: this instance's interval passed
        assert (await client.get("/customers", headers=auth(token))).status_code == 401

    code, out, _ = await isp("token", "revoke", prefix, env=env)
    assert "already revoked" in out
    code, _, err = await isp("token", "revoke", "00000000", env=env)
    assert code != 0
    assert "no token with prefix" in err
    code, _, err = await isp("token", "issue", "olga", "--expires-in-days", "0", env=env)
    assert code != 0
