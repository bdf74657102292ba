"""Signed plugins: keys, the signature file, verification over HTTP and the upload policy.

Plugins are signed exactly as an author signs them (``isp.plugins.trust.sign``, what
``isp plugins sign`` runs) and uploaded over HTTP to an app that trusts one key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from quart import Quart
from quart.typing import TestClientProtocol as Client

from isp.app import create_app
from isp.config import Settings, load_settings
from isp.errors import ConfigError, ISPError
from isp.plugins.archive import inspect_zip
from isp.plugins.keys import load_trusted_keys, write_keypair
from isp.plugins.trust import SIGNATURE_FILE, Verdict, isolation, sign
from tests.conftest import Tokens, auth, make_settings
from tests.plugins.builders import (
    isp,
    server_env,
    stamp_files,
    stamp_zip,
    upload,
    write_plugin,
)


@dataclass(frozen=True)
class Keys:
    signer: Path  # trusted
    signer_id: str
    stranger: Path  # a valid key this deployment does not trust
    stranger_id: str
    trusted: Path  # the ISP_PLUGIN_TRUSTED_KEYS file


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    signer_id = write_keypair(folder / "signer")
    stranger_id = write_keypair(folder / "stranger")
    trusted = folder / "trusted_keys"
    trusted.write_text("# signers of this deployment\n" + (folder / "signer.pub").read_text())
    return Keys(folder / "signer", signer_id, folder / "stranger", stranger_id, trusted)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, keys: Keys) -> Settings:
    return make_settings(
        database_url, tmp_path, plugin_trusted_keys=keys.trusted, plugin_unsigned="sandbox"
    )


def signed_zip(tmp_path: Path, key: Path, data: bytes | None = None) -> bytes:
    path = tmp_path / "plugin.zip"
    path.write_bytes(data if data is not None else stamp_zip())
    sign(path, key)
    return path.read_bytes()


def rewritten(data: bytes, change: dict[str, bytes]) -> bytes:
    """The zip with entries replaced or added (``change``: name -> content), order kept."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as out:
        for info in source.infolist():
            out.writestr(info, change.pop(info.filename, None) or source.read(info))
        for name, content in change.items():
            out.writestr(name, content)
    return buffer.getvalue()


def one_byte_changed(content: bytes) -> bytes:
    index = content.index(b"VERSION")
    return content[:index] + b"W" + content[index + 1 :]


async def newest_audit(client: Client, token: str) -> dict[str, Any]:
    entries = (await (await client.get("/audit", headers=auth(token))).get_json())["entries"]
    return dict(entries[0])


async def stamped(client: Client, token: str) -> str | None:
    response = await client.post("/customers", json={"name": "c"}, headers=auth(token))
    assert response.status_code == 201, await response.get_data(as_text=True)
    return (await response.get_json())["address"]


# --- keys ----------------------------------------------------------------------------


def test_keygen_writes_a_0600_private_key_and_a_one_line_public_key(tmp_path: Path) -> None:
    key_id = write_keypair(tmp_path / "signer")

    private_file, public_file = tmp_path / "signer", tmp_path / "signer.pub"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    private = load_pem_private_key(private_file.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    line = public_file.read_text()
    assert re.fullmatch(r"ed25519 [A-Za-z0-9+/]{43}=\n", line)
    raw = base64.b64decode(line.split()[1])
    assert raw == private.public_key().public_bytes_raw()
    assert key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert list(load_trusted_keys(public_file)) == [key_id]
    before = private_file.read_bytes()
    with pytest.raises(ISPError, match="refusing to overwrite"):
        write_keypair(tmp_path / "signer")
    assert private_file.read_bytes() == before


def test_signing_twice_gives_the_same_list_and_a_zip_an_upload_accepts(
    tmp_path: Path, keys: Keys
) -> None:
    first = signed_zip(tmp_path, keys.signer)
    again = signed_zip(tmp_path, keys.signer, first)  # the old signature is replaced

    archive = inspect_zip(again, max_size=1 << 20)
    document = json.loads(archive.files[SIGNATURE_FILE])
    assert (document["plugin"], document["version"]) == ("stamp", "1.0.0")
    assert document["key_id"] == keys.signer_id
    assert document["files"] == {
        path: hashlib.sha256(content).hexdigest()
        for path, content in archive.files.items()
        if path != SIGNATURE_FILE
    }
    assert sorted(archive.files) == sorted([*stamp_files(), SIGNATURE_FILE])
    assert json.loads(inspect_zip(first, max_size=1 << 20).files[SIGNATURE_FILE]) == document


# --- uploads ---------------------------------------------------------------------------


async def test_signed_zip_installs_as_signed_with_its_signer_and_runs(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys
) -> None:
    response = await upload(client, tokens.admin, signed_zip(tmp_path, keys.signer))

    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    assert (body["signature"], body["signer"], body["isolation"]) == (
        "signed",
        keys.signer_id,
        "in_process",
    )
    listed = (await (await client.get("/plugins", headers=auth(tokens.admin))).get_json())[
        "plugins"
    ]
    assert [(p["name"], p["signature"], p["signer"]) for p in listed] == [
        ("stamp", "signed", keys.signer_id)
    ]
    one = await (await client.get("/plugins/stamp", headers=auth(tokens.admin))).get_json()
    assert (one["signature"], one["signer"], one["isolation"]) == (
        "signed",
        keys.signer_id,
        "in_process",
    )
    entry = await newest_audit(client, tokens.admin)
    assert entry["action"] == "install"
    assert (entry["detail"]["signature"], entry["detail"]["signer"]) == ("signed", keys.signer_id)
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"


async def test_a_signed_folder_packed_and_uploaded_is_signed(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys
) -> None:
    from isp.plugins.authoring import pack

    folder = write_plugin(tmp_path / "work", "stamp", stamp_files())
    sign(folder, keys.signer)
    assert (folder / SIGNATURE_FILE).is_file()

    response = await upload(client, tokens.admin, pack(folder, tmp_path / "s.zip").read_bytes())

    assert response.status_code == 201, await response.get_data(as_text=True)
    assert (await response.get_json())["signature"] == "signed"


async def test_one_byte_changed_is_modified_refused_and_audited(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys, settings: Settings
) -> None:
    signed = signed_zip(tmp_path, keys.signer)
    handlers = zipfile.ZipFile(io.BytesIO(signed)).read("stamp/handlers.py")
    tampered = rewritten(signed, {"stamp/handlers.py": one_byte_changed(handlers)})

    response = await upload(client, tokens.admin, tampered)

    assert response.status_code == 422
    problem = await response.get_json()
    assert problem["signature"] == "modified"
    assert "stamp/handlers.py" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["file", "stamp/handlers.py"]
    entry = await newest_audit(client, tokens.admin)
    assert entry["detail"]["outcome"] == "refused"
    assert entry["sha256"] == hashlib.sha256(tampered).hexdigest()
    assert "modified" in entry["detail"]["reason"]
    missing = await client.get("/plugins/stamp", headers=auth(tokens.admin))
    assert missing.status_code == 404
    assert not (settings.plugins_dir / "stamp").exists()


async def test_a_file_added_after_signing_is_modified_and_refused(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys
) -> None:
    signed = signed_zip(tmp_path, keys.signer)
    tampered = rewritten(signed, {"stamp/extra.py": b"import os\n"})

    response = await upload(client, tokens.admin, tampered)

    assert response.status_code == 422
    problem = await response.get_json()
    assert problem["signature"] == "modified"
    assert problem["errors"][0]["loc"] == ["file", "stamp/extra.py"]
    assert "not in the signed list" in problem["detail"]


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda doc: {**doc, "signature": doc["signature"][:-4] + "AAA="}, id="bits"),
        pytest.param(lambda doc: {**doc, "version": "9.9.9"}, id="field-after-signing"),
        pytest.param(lambda doc: {**doc, "key_id": "0" * 16}, id="key-id"),
        pytest.param(lambda doc: {k: v for k, v in doc.items() if k != "files"}, id="no-files"),
        pytest.param(lambda doc: "not an object", id="not-an-object"),
    ],
)
async def test_a_broken_signature_is_invalid_and_refused(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys, breakage: Any
) -> None:
    signed = signed_zip(tmp_path, keys.signer)
    document = json.loads(zipfile.ZipFile(io.BytesIO(signed)).read(f"stamp/{SIGNATURE_FILE}"))
    broken = rewritten(signed, {f"stamp/{SIGNATURE_FILE}": json.dumps(breakage(document)).encode()})

    response = await upload(client, tokens.admin, broken)

    assert response.status_code == 422
    problem = await response.get_json()
    assert problem["signature"] == "invalid"
    assert problem["errors"][0]["loc"] == ["file", f"stamp/{SIGNATURE_FILE}"]
    entry = await newest_audit(client, tokens.admin)
    assert (entry["detail"]["outcome"], entry["sha256"]) == (
        "refused",
        hashlib.sha256(broken).hexdigest(),
    )


async def test_a_key_not_trusted_here_counts_as_unsigned_with_its_signer_shown(
    client: Client, tokens: Tokens, tmp_path: Path, keys: Keys
) -> None:
    response = await upload(client, tokens.admin, signed_zip(tmp_path, keys.stranger))

    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    assert (body["signature"], body["signer"]) == ("unsigned", keys.stranger_id)
    assert body["isolation"] == "sandbox"  # ISP_PLUGIN_UNSIGNED=sandbox
    # its hook runs in the worker, on a read-only snapshot: the stamp cannot be written
    response = await client.post("/customers", json={"name": "c"}, headers=auth(tokens.operator))
    assert response.status_code == 502, await response.get_data(as_text=True)
    assert "read-only" in (await response.get_json())["detail"]


async def test_an_unsigned_upload_is_unsigned_without_a_signer(
    client: Client, tokens: Tokens
) -> None:
    response = await upload(client, tokens.admin, stamp_zip())

    assert response.status_code == 201
    body = await response.get_json()
    assert (body["signature"], body["signer"], body["isolation"]) == (
        "unsigned",
        None,
        "sandbox",
    )


async def test_refuse_policy_refuses_unsigned_uploads_and_accepts_signed_ones(
    database_url: str, tmp_path: Path, keys: Keys
) -> None:
    from isp.auth.roles import add_user
    from isp.auth.tokens import issue_token

    settings = make_settings(
        database_url, tmp_path, plugin_trusted_keys=keys.trusted, plugin_unsigned="refuse"
    )
    app: Quart = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        await add_user("alice", ["admin"])
        token = await issue_token("alice", ["admin"])

        unsigned = await upload(client, token, stamp_zip())
        stranger = await upload(client, token, signed_zip(tmp_path, keys.stranger))
        signed = await upload(client, token, signed_zip(tmp_path, keys.signer))

        assert unsigned.status_code == 422
        problem = await unsigned.get_json()
        assert "ISP_PLUGIN_UNSIGNED=refuse" in problem["detail"]
        assert problem["signature"] == "unsigned"
        assert stranger.status_code == 422
        assert keys.stranger_id in (await stranger.get_json())["detail"]
        assert signed.status_code == 201, await signed.get_data(as_text=True)
        assert (await signed.get_json())["signature"] == "signed"


async def test_the_openapi_plugin_schema_documents_signature_signer_and_isolation(
    client: Client,
) -> None:
    document = await (await client.get("/openapi.json")).get_json()

    fields = document["components"]["schemas"]["Plugin"]["properties"]
    assert fields["signature"]["enum"] == ["signed", "unsigned", "invalid", "modified"]
    assert fields["isolation"]["enum"] == ["in_process", "sandbox"]
    assert "signer" in fields
    one = document["paths"]["/plugins/{name}"]["get"]["responses"]["200"]
    assert one["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Plugin"}
    listed = document["paths"]["/plugins"]["get"]["responses"]["200"]["content"]
    items = listed["application/json"]["schema"]["properties"]["plugins"]["items"]
    assert items == {"$ref": "#/components/schemas/Plugin"}


# --- local folders -----------------------------------------------------------------------


async def test_a_local_folder_is_verified_at_load_and_still_trusted_when_modified(
    app: Quart, client: Client, tokens: Tokens, settings: Settings, keys: Keys
) -> None:
    folder = write_plugin(settings.plugins_dir, "stamp", stamp_files())
    sign(folder, keys.signer)
    runtime = app.extensions["isp.plugins"]

    loaded = await runtime.load_plugin("stamp")
    assert (loaded["signature"], loaded["signer"], loaded["source"]) == (
        "signed",
        keys.signer_id,
        "local",
    )
    (folder / "notes.txt").write_text("added by hand\n")
    reloaded = await runtime.load_plugin("stamp")

    assert (reloaded["signature"], reloaded["status"]) == ("modified", "active")
    assert reloaded["isolation"] == "in_process"
    assert await stamped(client, tokens.operator) == "stamp-1.0.0"


@pytest.mark.parametrize(
    ("origin", "status", "overrides", "where"),
    [
        ("upload", "unsigned", {"plugin_unsigned": "sandbox"}, "sandbox"),  # the default
        ("upload", "unsigned", {"plugin_unsigned": "allow"}, "in_process"),
        ("upload", "signed", {"plugin_unsigned": "sandbox"}, "in_process"),
        ("local", "unsigned", {"plugin_unsigned": "sandbox"}, "in_process"),  # trusted
        ("local", "unsigned", {"plugin_sandbox_local": True}, "sandbox"),
        ("local", "signed", {"plugin_sandbox_local": True}, "in_process"),
    ],
)
def test_isolation_says_who_runs_in_the_sandbox(
    tmp_path: Path, origin: str, status: Any, overrides: dict[str, Any], where: str
) -> None:
    settings = make_settings("sqlite://:memory:", tmp_path, **overrides)

    assert isolation("stamp", origin, Verdict(status), settings) == where


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("rsa AAAAB3NzaC1yc2E=", "unknown key type 'rsa'"),
        ("ed25519 not*base64", "the key is not valid base64"),
        ("ed25519 AAAA", "an Ed25519 public key is 32 bytes, this one is 3"),
        ("ed25519", "expected 'ed25519 <base64 key>'"),
    ],
)
def test_a_bad_trusted_keys_line_is_a_start_up_error_naming_file_and_line(
    tmp_path: Path, keys: Keys, line: str, why: str
) -> None:
    path = tmp_path / "trusted"
    path.write_text(keys.trusted.read_text() + "\n" + line + "\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(plugin_trusted_keys=path)

    assert "ISP_PLUGIN_TRUSTED_KEYS" in caught.value.detail
    assert f"{path}, line 4: {why}" in caught.value.detail


def test_trust_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ISP_PLUGIN_UNSIGNED"):
        load_settings(plugin_unsigned="maybe")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(plugin_trusted_keys=tmp_path / "missing")
    defaults = load_settings(plugin_trusted_keys="")
    assert (defaults.plugin_trusted_keys, defaults.plugin_unsigned) == (None, "sandbox")
    assert defaults.plugin_sandbox_local is False


# --- the command line ----------------------------------------------------------------------


async def test_keygen_sign_install_and_list_on_the_command_line(
    database_url: str, tmp_path: Path
) -> None:
    env = server_env(tmp_path, ISP_DATABASE_URL=database_url)
    key = tmp_path / "signer"
    _, out, _ = await isp("plugins", "keygen", str(key), env=env)
    key_id = out.split("key id ")[1].split()[0]
    trusted = tmp_path / "trusted_keys"
    trusted.write_text((tmp_path / "signer.pub").read_text())
    env["ISP_PLUGIN_TRUSTED_KEYS"] = str(trusted)
    archive = tmp_path / "stamp.zip"
    archive.write_bytes(stamp_zip())

    _, out, _ = await isp("plugins", "sign", str(archive), "--key", str(key), env=env)
    assert key_id in out
    await isp("plugins", "install", str(archive), env=env)
    _, listed, _ = await isp("plugins", "list", env=env)

    assert listed.split() == [
        "stamp", "1.0.0", "active", "upload", "signed", "in_process", f"signer={key_id}"
    ]  # fmt: skip
    code, _, err = await isp("plugins", "keygen", str(key), env=env, check=False)
    assert code == 1
    assert "refusing to overwrite" in err


async def test_the_command_line_names_a_bad_trusted_keys_file_and_line(
    tmp_path: Path,
) -> None:
    trusted = tmp_path / "trusted_keys"
    trusted.write_text("# ok\ned25519 tooshort\n")
    env = server_env(tmp_path, ISP_PLUGIN_TRUSTED_KEYS=str(trusted))

    code, _, err = await isp("plugins", "list", env=env, check=False)

    assert code == 1
    assert f"{trusted}, line 2" in err
    assert "Traceback" not in err


async def test_sign_on_the_command_line_signs_a_folder_that_pack_keeps_signed(
    tmp_path: Path, keys: Keys
) -> None:
    env = server_env(tmp_path)
    folder = write_plugin(tmp_path / "work", "stamp", stamp_files())

    await isp("plugins", "sign", str(folder), "--key", str(keys.signer), env=env)
    await isp("plugins", "pack", str(folder), "-o", str(tmp_path / "s.zip"), env=env)

    assert json.loads((folder / SIGNATURE_FILE).read_text())["key_id"] == keys.signer_id
    archive = inspect_zip((tmp_path / "s.zip").read_bytes(), max_size=1 << 20)
    assert archive.files[SIGNATURE_FILE] == (folder / SIGNATURE_FILE).read_bytes()
