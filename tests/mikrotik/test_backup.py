"""Exports and binary backups against the emulated router (plugins/mikrotik/backup.py)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest

from tests.mikrotik.conftest import target_for
from tests.mikrotik.loaded import backup, errors, ssh
from tests.mikrotik.loaded import settings as settings_module
from tests.routeros import MAGIC_AES, MAGIC_PLAIN, RouterOSServer, RouterState
from tests.routeros.render import backup_bytes

KEY = "correct horse battery staple"


def plugin_settings(**values: Any) -> Any:
    return settings_module.MikrotikSettings(
        **{"connect_timeout": 5, "command_timeout": 5, "backup_file_wait": 2, **values}
    )


@pytest.fixture(autouse=True)
def configured(state: RouterState) -> None:
    state.add_profile("home-50", rate_limit="10M/50M")
    state.add_secret("alice", password="s3cret", service="pppoe", profile="home-50")


async def test_export_artifact_is_the_full_text_with_a_stable_digest(
    session: Any, state: RouterState
) -> None:
    first = await backup.export(session, plugin_settings())
    second = await backup.export(session, plugin_settings())
    assert first["kind"] == "export"
    assert first["data"].startswith(b"# 20")  # header kept in what is stored
    assert first["data"] != second["data"]  # the time stamp moved...
    assert first["sha256"] == second["sha256"]  # ...but the configuration did not
    assert b"s3cret" not in first["data"]  # v7 hides secrets by default
    state.secret("alice").profile = "default"
    third = await backup.export(session, plugin_settings())
    assert third["sha256"] != first["sha256"]


def test_volatile_lines_do_not_change_the_digest() -> None:
    body = "# software id = X\r\n/ppp secret\r\nadd name=a\r\n"
    v7 = "# 2026-11-24 10:00:00 by RouterOS 7.16.1\r\n" + body
    v6 = "# nov/24/2026 10:00:00 by RouterOS 6.49.17\r\n" + body
    poe = v7.replace("/ppp secret", "# poe-out status: short_circuit\r\n/ppp secret")
    assert backup.export_digest(v7) == backup.export_digest(v6) == backup.export_digest(poe)
    assert backup.export_digest(v7) != backup.export_digest(v7.replace("a\r\n", "b\r\n"))


async def test_show_sensitive_includes_secrets_when_configured(session: Any) -> None:
    artifact = await backup.export(session, plugin_settings(export_show_sensitive=True))
    assert b"password=s3cret" in artifact["data"]


async def test_v6_rejecting_show_sensitive_falls_back_to_a_real_export(
    mt_settings: Any,
) -> None:
    v6 = RouterState(legacy_v6=True)
    v6.add_secret("alice", password="s3cret")
    async with (
        RouterOSServer(v6) as router,
        ssh.open_session(target_for(router), mt_settings) as session,
    ):
        artifact = await backup.export(session, plugin_settings(export_show_sensitive=True))
    text = artifact["data"].decode()
    assert text.startswith("# ")
    assert "by RouterOS 6.49.17" in text.splitlines()[0]
    assert "expected end of command" not in text
    assert "password=s3cret" in text  # v6 shows them anyway
    assert v6.exec_commands == ["/export show-sensitive", "/export"]


async def test_connection_dropped_mid_export_fails_clearly(
    session: Any, state: RouterState
) -> None:
    state.drop_during_export = True
    with pytest.raises(errors.RouterConnectionLost, match="during '/export'"):
        await backup.back_up(session, plugin_settings())
    assert state.files == {}


@pytest.mark.parametrize(
    "output",
    ["not enough permissions (9)", "failure: out of memory", "bad command name export"],
)
async def test_error_text_instead_of_an_export_is_refused(
    session: Any, state: RouterState, output: str
) -> None:
    state.fail_next(output, match="export")
    with pytest.raises(errors.RouterCommandError) as caught:
        await backup.export(session, plugin_settings())
    assert caught.value.extra["router_message"] == output


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "did not print an export"),
        (b"Columns: NAME\r\n", "did not print an export"),
        (b"# 2026-11-24 10:00:00 by RouterOS 7.16.1\r\n/ppp secret\r\nadd name=al", "mid-line"),
        (b"# 2026-11-24 10:00:00 by RouterOS 7.16.1\r\n/ppp secret\r\nadd name=a \\\r\n", "mid"),
    ],
)
async def test_output_that_is_not_a_complete_export_is_refused(
    session: Any, raw: bytes, why: str
) -> None:
    command = backup.Command("/", "export")
    with pytest.raises(errors.BackupInvalid, match=why):
        backup.check_export(raw, session, command)


async def test_binary_backup_is_sealed_with_the_device_password_and_removed(
    session: Any, state: RouterState
) -> None:
    settings = plugin_settings(backup_key=KEY)
    artifact = await backup.binary(session, settings)
    data = artifact["data"]
    assert struct.unpack("<I", data[:4])[0] == MAGIC_AES
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    password = settings_module.backup_password(settings.backup_key, 7)
    assert data == backup_bytes(state, password, "aes-sha256")  # an operator can restore
    assert state.files == {}  # removed from the flash
    assert any(c.startswith("/file remove") for c in state.exec_commands)


def test_backup_password_is_per_device_and_deterministic() -> None:
    key = settings_module.MikrotikSettings(backup_key=KEY).backup_key
    first = settings_module.backup_password(key, 1)
    assert first == settings_module.backup_password(key, 1)
    assert first != settings_module.backup_password(key, 2)
    assert len(first) == 32


async def test_without_a_backup_key_the_backup_is_unencrypted(
    session: Any, state: RouterState
) -> None:
    artifact = await backup.binary(session, plugin_settings())
    assert struct.unpack("<I", artifact["data"][:4])[0] == MAGIC_PLAIN
    assert any("dont-encrypt=" in c for c in state.exec_commands)
    assert state.files == {}


async def test_backup_file_written_late_is_waited_for(session: Any, state: RouterState) -> None:
    state.backup_delay = 0.3
    artifact = await backup.binary(session, plugin_settings())
    assert struct.unpack("<I", artifact["data"][:4])[0] == MAGIC_PLAIN
    assert state.files == {}


async def test_backup_file_that_never_appears_fails(session: Any, state: RouterState) -> None:
    state.fail_next("Configuration backup saved", match="backup save")  # says so, writes nothing
    with pytest.raises(errors.BackupInvalid, match="did not appear within 0.3 s"):
        await backup.binary(session, plugin_settings(backup_file_wait=0.3))


async def test_a_file_with_the_wrong_magic_is_refused_and_removed(
    session: Any, state: RouterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "backup_name", lambda device_id: "fixed")
    state.fail_next("Configuration backup saved", match="backup save")
    state.files["fixed.backup"] = b"<html>not a backup</html>"
    with pytest.raises(errors.BackupInvalid, match="magic 0x"):
        await backup.binary(session, plugin_settings())
    assert state.files == {}


async def test_sftp_refused_is_a_permission_error_and_the_file_is_removed(
    session: Any, state: RouterState
) -> None:
    state.sftp_denied = True
    with pytest.raises(errors.RouterPermissionDenied, match="ftp policy"):
        await backup.binary(session, plugin_settings())
    assert state.files == {}


async def test_back_up_returns_export_and_binary_over_one_connection(
    session: Any, state: RouterState, router: RouterOSServer
) -> None:
    artifacts = await backup.back_up(session, plugin_settings(backup_key=KEY))
    assert [a["kind"] for a in artifacts] == ["export", "binary"]
    assert state.logins == ["admin+ct"]
    assert state.files == {}


async def test_binary_backup_can_be_turned_off(session: Any, state: RouterState) -> None:
    artifacts = await backup.back_up(session, plugin_settings(binary_backup=False))
    assert [a["kind"] for a in artifacts] == ["export"]
    assert not any("backup" in c for c in state.exec_commands)
