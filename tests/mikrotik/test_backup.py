"""Exports and binary backups against the emulated router (backup, export, binary modules)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest

from tests.mikrotik.conftest import target_for
from tests.mikrotik.loaded import backup, binary, errors, export, ssh
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
    first = await export.take(session, plugin_settings())
    second = await export.take(session, plugin_settings())
    assert first["kind"] == "export"
    assert first["data"].startswith(b"# 20")  # header kept in what is stored
    assert first["data"] != second["data"]  # the time stamp moved...
    assert first["sha256"] == second["sha256"]  # ...but the configuration did not
    assert b"s3cret" in first["data"]  # show-sensitive by default on v7
    assert b"isp-export-end-" not in first["data"]  # the end marker is not stored
    state.secret("alice").profile = "default"
    third = await export.take(session, plugin_settings())
    assert third["sha256"] != first["sha256"]


def test_volatile_lines_do_not_change_the_digest() -> None:
    body = "# software id = X\r\n/ppp secret\r\nadd name=a\r\n"
    v7 = "# 2026-11-24 10:00:00 by RouterOS 7.16.1\r\n" + body
    v6 = "# nov/24/2026 10:00:00 by RouterOS 6.49.17\r\n" + body
    poe = v7.replace("/ppp secret", "# poe-out status: short_circuit\r\n/ppp secret")
    assert export.export_digest(v7) == export.export_digest(v6) == export.export_digest(poe)
    assert export.export_digest(v7) != export.export_digest(v7.replace("a\r\n", "b\r\n"))


async def test_show_sensitive_includes_secrets_when_configured(session: Any) -> None:
    artifact = await export.take(session, plugin_settings(export_show_sensitive=True))
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
        artifact = await export.take(session, plugin_settings(export_show_sensitive=True))
    text = artifact["data"].decode()
    assert text.startswith("# ")
    assert "by RouterOS 6.49.17" in text.splitlines()[0]
    assert "expected end of command" not in text
    assert "password=s3cret" in text  # v6 shows them anyway
    assert [c.split(";")[0] for c in v6.exec_commands] == ["/export show-sensitive", "/export"]


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
        await export.take(session, plugin_settings())
    assert caught.value.extra["router_message"] == output


MARKER = "isp-export-end-0123456789abcdef"
HEAD = b"# 2026-11-24 10:00:00 by RouterOS 7.16.1\r\n"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "cut short"),
        (b"Columns: NAME\r\n" + MARKER.encode() + b"\r\n", "did not print an export"),
        (HEAD + b"/ppp secret\r\nadd name=al", "cut short"),
        (HEAD + b"/ppp secret\r\nadd name=a\r\n", "cut short"),  # a clean cut
        (HEAD + b"add name=a " + MARKER.encode() + b"\r\n", "cut short"),  # not its own line
        (HEAD + MARKER.encode() + b"\r\nadd name=a\r\n", "cut short"),  # not the last line
        (HEAD + b'#error exporting "/ip/firewall/calea" (timeout)\r\n' + MARKER.encode()
         + b"\r\n", "could not export /ip/firewall/calea"),
        (HEAD + b"#error exporting /ip socks\r\n#interrupted\r\n", "interrupted"),
    ],
)
async def test_output_that_is_not_a_complete_export_is_refused(
    session: Any, raw: bytes, why: str
) -> None:
    script = export.export_script(MARKER, show_sensitive=False)
    with pytest.raises(errors.BackupInvalid, match=why):
        export.check_export(raw, session, script, MARKER)


async def test_a_complete_export_is_returned_without_its_marker(session: Any) -> None:
    script = export.export_script(MARKER, show_sensitive=False)
    body = HEAD + b"/ppp secret\r\nadd name=a\r\n"
    assert export.check_export(body + MARKER.encode() + b"\r\n", session, script, MARKER) == body


def test_restart_warnings_are_volatile() -> None:
    # the warning style Oxidized's RouterOS model strips
    body = "# software id = X\r\n/ppp secret\r\nadd name=a\r\n"
    warned = body.replace(
        "/ppp secret",
        "# ipv6 settings changed, please restart the device in order to apply the new setting"
        "\r\n/ppp secret",
    )
    assert export.export_digest(warned) == export.export_digest(body)


async def test_binary_backup_is_sealed_with_the_device_password_and_removed(
    session: Any, state: RouterState
) -> None:
    settings = plugin_settings(backup_key=KEY)
    artifact = await binary.take(session, settings)
    data = artifact["data"]
    assert struct.unpack("<I", data[:4])[0] == MAGIC_AES
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    password = settings_module.backup_password(settings.backup_key, 7)
    assert data == backup_bytes(state, password, "aes-sha256")  # an operator can restore
    assert state.files == {}  # removed from the flash
    assert any(c.startswith("/file remove") for c in state.exec_commands)
    assert struct.unpack("<I", data[4:8])[0] == len(data)  # the header's total length


def test_backup_password_is_per_device_and_deterministic() -> None:
    key = settings_module.MikrotikSettings(backup_key=KEY).backup_key
    first = settings_module.backup_password(key, 1)
    assert first == settings_module.backup_password(key, 1)
    assert first != settings_module.backup_password(key, 2)
    assert len(first) == 32


async def test_without_a_backup_key_the_backup_is_unencrypted(
    session: Any, state: RouterState
) -> None:
    artifact = await binary.take(session, plugin_settings())
    assert struct.unpack("<I", artifact["data"][:4])[0] == MAGIC_PLAIN
    assert any("dont-encrypt=" in c for c in state.exec_commands)
    assert state.files == {}


async def test_backup_file_written_late_is_waited_for(session: Any, state: RouterState) -> None:
    state.backup_delay = 0.3
    artifact = await binary.take(session, plugin_settings())
    assert struct.unpack("<I", artifact["data"][:4])[0] == MAGIC_PLAIN
    assert state.files == {}


async def test_backup_file_that_never_appears_fails(session: Any, state: RouterState) -> None:
    state.backup_delay = 60  # says it saved, writes nothing for a minute
    with pytest.raises(errors.BackupInvalid, match="not listed by /file within 0.3 s"):
        await binary.take(session, plugin_settings(backup_file_wait=0.3))


@pytest.mark.parametrize("version", ["7.16.1", "7.17.2", "6.49.17"])
async def test_both_save_outputs_are_accepted(
    mt_settings: Any, version: str
) -> None:
    state = RouterState(version=version)
    async with (
        RouterOSServer(state) as router,
        ssh.open_session(target_for(router), mt_settings) as session,
    ):
        artifact = await binary.take(session, plugin_settings())
    assert struct.unpack("<I", artifact["data"][:4])[0] == MAGIC_PLAIN
    assert state.files == {}


async def test_a_failed_save_is_the_routers_refusal(session: Any, state: RouterState) -> None:
    state.backup_save_error = "invalid file name"
    with pytest.raises(errors.RouterCommandError) as caught:
        await binary.take(session, plugin_settings())
    assert caught.value.extra["router_message"] == (
        "Failed to save system configuration backup\ninvalid file name"
    )
    assert state.files == {}


async def test_flash_backup_is_fetched_and_removed_by_its_real_name(mt_settings: Any) -> None:
    state = RouterState(flash=True)
    async with (
        RouterOSServer(state) as router,
        ssh.open_session(target_for(router), mt_settings) as session,
    ):
        artifact = await binary.take(session, plugin_settings())
    assert artifact["data"] == backup_bytes(state, None, "aes-sha256")
    assert state.backups_saved == 1
    assert state.files == {}
    [remove] = [c for c in state.exec_commands if c.startswith("/file remove")]
    assert '[find name="flash/isp-7-' in remove


async def test_a_backup_that_stops_growing_is_never_returned(
    session: Any, state: RouterState
) -> None:
    state.backup_write_stalls = True
    with pytest.raises(errors.BackupInvalid, match="not complete within 0.3 s"):
        await binary.take(session, plugin_settings(backup_file_wait=0.3))
    assert state.files == {}


async def test_a_file_with_the_wrong_magic_is_refused_and_removed(
    session: Any, state: RouterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binary, "backup_name", lambda device_id: "isp-fixed")
    state.fail_next("Configuration backup saved", match="backup save", continue_line=True)
    state.files["isp-fixed.backup"] = b"<html>not a backup</html>"
    with pytest.raises(errors.BackupInvalid, match="magic 0x"):
        await binary.take(session, plugin_settings())
    assert state.files == {}


async def test_a_header_shorter_than_the_file_is_refused(
    session: Any, state: RouterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binary, "backup_name", lambda device_id: "isp-fixed")
    state.fail_next("Configuration backup saved", match="backup save", continue_line=True)
    state.files["isp-fixed.backup"] = struct.pack("<II", MAGIC_PLAIN, 10) + bytes(30)
    with pytest.raises(errors.BackupInvalid, match="header says 10"):
        await binary.take(session, plugin_settings())
    assert state.files == {}


async def test_a_failing_binary_step_carries_the_export(session: Any, state: RouterState) -> None:
    state.sftp_denied = True
    with pytest.raises(errors.RouterPermissionDenied) as caught:
        await backup.back_up(session, plugin_settings())
    assert caught.value.extra["step"] == "binary"
    assert [a["kind"] for a in caught.value.artifacts] == ["export"]
    assert "artifacts" not in caught.value.to_problem()


async def test_sftp_refused_is_a_permission_error_and_the_file_is_removed(
    session: Any, state: RouterState
) -> None:
    state.revoke("admin", "ftp")
    with pytest.raises(errors.RouterPermissionDenied, match="ftp policy"):
        await binary.take(session, plugin_settings())
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
