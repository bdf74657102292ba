"""The RouterOS emulator behaves like a RouterOS router seen from a plain asyncssh client."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncssh
import pytest

from tests.routeros import (
    MAGIC_AES,
    MAGIC_PLAIN,
    Interpreter,
    RouterFleet,
    RouterOSServer,
    RouterState,
    quote,
)

V7_HEADER = re.compile(r"^# \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} by RouterOS 7\.16\.1$")
V6_HEADER = re.compile(
    r"^# (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)/\d{2}/\d{4} "
    r"\d{2}:\d{2}:\d{2} by RouterOS 6\.49\.17$"
)


@pytest.fixture
def state() -> RouterState:
    return RouterState()


@pytest.fixture
async def router(state: RouterState) -> AsyncIterator[RouterOSServer]:
    async with RouterOSServer(state) as server:
        yield server


def connect(
    router: RouterOSServer, username: str = "admin+ct", password: str = "secret", **kwargs: Any
) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    options: dict[str, Any] = {"known_hosts": None, **kwargs}
    return asyncssh.connect(
        router.host, router.port, username=username, password=password, **options
    )


@pytest.fixture
async def conn(router: RouterOSServer) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with connect(router) as connection:
        yield connection


async def run(conn: asyncssh.SSHClientConnection, command: str) -> str:
    """Run one command; RouterOS always exits 0 with an empty stderr, errors included."""
    result = await conn.run(command)
    assert result.exit_status == 0
    assert result.stderr == ""
    assert isinstance(result.stdout, str)
    return result.stdout


async def test_banner_is_exactly_rossssh(router: RouterOSServer) -> None:
    reader, writer = await asyncio.open_connection(router.host, router.port)
    try:
        assert await reader.readline() == b"SSH-2.0-ROSSSH\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_host_key_is_rsa_2048(
    conn: asyncssh.SSHClientConnection, router: RouterOSServer
) -> None:
    assert conn.get_extra_info("server_version") == "SSH-2.0-ROSSSH"
    assert router.host_key.algorithm == b"ssh-rsa"
    assert router.host_key.pyca_key.key_size == 2048


@pytest.mark.parametrize("username", ["admin", "admin+ct", "admin+cet511w4098h"])
async def test_login_name_options_after_plus_are_ignored(
    router: RouterOSServer, state: RouterState, username: str
) -> None:
    async with connect(router, username) as conn:
        assert await run(conn, "/system identity print") == "  name: MikroTik\r\n"
    assert state.logins == [username]


async def test_wrong_password_is_refused(router: RouterOSServer) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(router, password="wrong"):
            pass


async def test_password_refused_once_user_has_a_key(
    router: RouterOSServer, state: RouterState
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    state.authorized_keys["admin"] = [key.export_public_key().decode()]
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(router, client_keys=None):
            pass
    async with connect(router, password="", client_keys=[key]) as conn:
        assert "MikroTik" in await run(conn, "/system identity print")


@pytest.mark.parametrize(
    ("algorithm", "error"),
    [
        ("ssh-rsa", asyncssh.HostKeyNotVerifiable),
        # known_hosts narrows the client's host key algorithms to the known key's type
        ("ssh-ed25519", asyncssh.KeyExchangeFailed),
    ],
)
async def test_changed_host_key_is_detected(
    state: RouterState, algorithm: str, error: type[Exception]
) -> None:
    async with RouterOSServer(state) as original:
        known = asyncssh.import_known_hosts(original.known_hosts_line)
        async with connect(original, known_hosts=known) as conn:
            await run(conn, "/system identity print")
    other_key = asyncssh.generate_private_key(algorithm)
    async with RouterOSServer(state, port=original.port, host_key=other_key) as replaced:
        with pytest.raises(error):
            async with connect(replaced, known_hosts=known):
                pass


async def test_duplicate_secret_is_a_failure_text_with_exit_status_zero(
    conn: asyncssh.SSHClientConnection,
) -> None:
    add = "/ppp secret add name=alice password=pw service=pppoe profile=default"
    assert await run(conn, add) == ""
    assert await run(conn, add) == "failure: secret with the same name already exists\r\n"


async def test_print_terse_lists_profiles_and_secrets(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(conn, "/ppp profile add name=plan-50 rate-limit=10M/50M")
    await run(
        conn,
        "/ppp secret add name=alice password=pw service=pppoe profile=plan-50 "
        'remote-address=10.0.0.2 comment="flat 3"',
    )
    assert await run(conn, "/ppp profile print terse where name=plan-50") == (
        " 2   name=plan-50 rate-limit=10M/50M\r\n"
    )
    assert (await run(conn, "/ppp profile print terse")).splitlines()[:2] == [
        " 0 * name=default",
        " 1 * name=default-encryption",
    ]
    assert await run(conn, "/ppp secret print terse") == (
        ' 0   comment="flat 3" name=alice service=pppoe password=pw profile=plan-50 '
        "remote-address=10.0.0.2\r\n"
    )
    table = (await run(conn, "/ppp secret print")).splitlines()
    assert table[0] == "Columns: NAME, SERVICE, PASSWORD, PROFILE, REMOTE-ADDRESS"
    assert state.secret("alice") is not None


async def test_disable_enable_and_remove_a_secret(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(conn, "/ppp secret add name=bob password=pw service=pppoe")
    assert await run(conn, "/ppp secret disable [find name=bob]") == ""
    assert (await run(conn, "/ppp secret print terse where name=bob")).startswith(" 0 X ")
    await run(conn, "/ppp secret enable [find where name=bob]")
    assert (await run(conn, "/ppp secret print terse")).startswith(" 0   name=bob")
    await run(conn, "/ppp secret set [find name=bob] password=new profile=default-encryption")
    secret = state.secret("bob")
    assert secret is not None
    assert (secret.password, secret.profile) == ("new", "default-encryption")
    await run(conn, "/ppp secret remove [find name=bob]")
    assert state.secrets == []


async def test_empty_find_is_a_silent_no_op(conn: asyncssh.SSHClientConnection) -> None:
    for verb in ("disable", "enable", "remove"):
        assert await run(conn, f"/ppp secret {verb} [find name=nobody]") == ""
    assert await run(conn, "/ppp secret set [find name=nobody] password=x") == ""
    assert await run(conn, "/ppp active remove [find name=nobody]") == ""


async def test_disabling_a_secret_keeps_the_session(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.add_secret("carol", password="pw", service="pppoe")
    state.add_active("carol", "10.0.0.9")
    await run(conn, "/ppp secret disable [find name=carol]")
    assert "name=carol" in await run(conn, "/ppp active print terse")
    await run(conn, "/ppp active remove [find name=carol]")
    assert await run(conn, "/ppp active print terse") == ""


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/foo bar", "bad command name foo (line 1 column 2)"),
        ("/ppp secret frob", "bad command name frob (line 1 column 13)"),
        ("/ppp/secret/frob", "bad command name frob (line 1 column 13)"),
        ("/ppp secret print; /nope", "bad command name nope (line 1 column 21)"),
        ('/ppp secret add name="open', "syntax error (line 1 column 22)"),
        ("/ppp secret remove [find name=x", "syntax error (line 1 column 20)"),
        ("/ppp secret print]", "syntax error (line 1 column 18)"),
        ("/system identity print extra", "expected end of command (line 1 column 24)"),
        ("/ppp secret add name=a nosuch=1", "expected end of command (line 1 column 24)"),
        ("/ppp secret add name=a comment=two words", "expected end of command (line 1 column 36)"),
        ("/ppp secret add name=a service=bogus", "input does not match any value of service"),
        ("/ppp secret add name=a profile=nope", "input does not match any value of profile"),
        (
            "/ppp secret add name=a remote-address=10.0.0.256",
            "invalid value for argument remote-address",
        ),
        ("/ppp secret remove nobody", "no such item"),
        ("/file remove missing.backup", "no such item"),
        ("/ppp profile add name=default", "failure: profile with the same name already exists"),
    ],
)
async def test_error_texts(
    conn: asyncssh.SSHClientConnection, state: RouterState, command: str, expected: str
) -> None:
    assert await run(conn, command) == expected + "\r\n"
    assert state.secrets == []


async def test_a_compile_error_runs_nothing_and_a_runtime_error_stops_the_line(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(conn, "/ppp secret add name=a; /nope")
    assert state.secrets == []
    out = await run(conn, "/ppp secret add name=a; /ppp secret add name=a; /ppp secret add name=b")
    assert out == "failure: secret with the same name already exists\r\n"
    assert [s.name for s in state.secrets] == ["a"]


async def test_write_commands_need_permission(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.permissions_denied = True
    assert await run(conn, "/ppp secret add name=a") == "not enough permissions (9)\r\n"
    assert await run(conn, "/system backup save name=b") == "not enough permissions (9)\r\n"
    assert await run(conn, "/ppp secret print terse") == ""
    assert state.secrets == []
    assert state.files == {}


async def test_injected_error_replaces_the_next_statement(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.fail_next("failure: out of memory", match="secret add")
    await run(conn, "/ppp profile add name=p")
    assert await run(conn, "/ppp secret add name=a") == "failure: out of memory\r\n"
    assert await run(conn, "/ppp secret add name=a") == ""
    assert [s.name for s in state.secrets] == ["a"]


async def test_unquoted_semicolon_runs_an_injected_statement(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(conn, "/ppp secret add name=a;/system reboot")
    assert "/system reboot" in state.executed
    assert state.reboots == 1


async def test_unescaped_dollar_bracket_in_quotes_runs_a_command(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(conn, '/ppp secret add name=a password="x$[/system reboot]"')
    assert "/system reboot" in state.executed
    assert state.reboots == 1
    assert state.secrets[0].password == "x"


async def test_quoted_specials_stay_data(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    await run(
        conn,
        '/ppp secret add name="a;/system reboot" '
        'password="p\\"q\\\\r\\$[/system reboot]$" comment="[/system reboot]"',
    )
    assert state.reboots == 0
    assert "/system reboot" not in state.executed
    secret = state.secrets[0]
    assert secret.name == "a;/system reboot"
    assert secret.password == 'p"q\\r$[/system reboot]$'
    assert secret.comment == "[/system reboot]"


@pytest.mark.parametrize(
    "value",
    [
        "a;/system reboot",
        "x$[/system reboot]",
        'q"uo\\te',
        "[find]",
        "$var",
        "sp ace",
        "tab\tnew\nline",
        "what?",
        "žluťoučký",
        "",
        "a=b",
    ],
)
async def test_quote_round_trips_through_the_router(
    conn: asyncssh.SSHClientConnection, state: RouterState, value: str
) -> None:
    await run(conn, f"/ppp secret add name=n password={quote(value)} comment={quote(value)}")
    assert (state.secrets[0].password, state.secrets[0].comment) == (value, value)
    assert state.reboots == 0
    assert state.variables_read == []


async def test_export_header_and_sections(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.add_profile("plan-50", rate_limit="10M/50M")
    state.add_secret("alice", password="pw", service="pppoe", profile="plan-50")
    lines = (await run(conn, "/export")).split("\r\n")
    assert V7_HEADER.match(lines[0])
    assert lines[1:5] == [
        "# software id = ABCD-1234",
        "#",
        "# model = RB5009UG+S+",
        "# serial number = HD1234567",
    ]
    assert lines[5:] == [
        "/ppp profile",
        "add name=plan-50 rate-limit=10M/50M",
        "/ppp secret",
        "add name=alice profile=plan-50 service=pppoe",
        "",
    ]


def test_export_replays_into_the_same_configuration() -> None:
    source = RouterState(identity="Core 1")
    source.add_profile("plan-50", rate_limit="10M/50M", comment="fifty")
    source.add_secret(
        "alice",
        password='p"w$x\\',
        service="pppoe",
        profile="plan-50",
        remote_address="10.0.0.2",
        comment="c" * 50,
        disabled=True,
    )
    source.add_secret("bob")
    script = Interpreter(source).run("/export show-sensitive").output
    replica = RouterState()
    assert Interpreter(replica).run(script).output == ""
    assert replica.secrets == source.secrets
    assert replica.profiles == source.profiles
    assert replica.identity == "Core 1"


async def test_two_exports_differ_only_in_their_first_line(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.add_secret("alice", password="pw")
    first, second = (
        (await run(conn, "/export")).split("\r\n"),
        (await run(conn, "/export")).split("\r\n"),
    )
    assert first[0] != second[0]
    assert first[1:] == second[1:]


async def test_show_sensitive_shows_passwords(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.add_secret("alice", password="s3cr3t", service="pppoe")
    assert "s3cr3t" not in await run(conn, "/export")
    assert "add name=alice password=s3cr3t service=pppoe\r\n" in await run(
        conn, "/export show-sensitive"
    )


async def test_long_export_lines_wrap_with_backslash(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.add_secret(
        "alice", password="pw", service="pppoe", comment="x" * 40, remote_address="10.0.0.2"
    )
    lines = (await run(conn, "/export show-sensitive")).split("\r\n")
    start = lines.index("/ppp secret") + 1
    assert lines[start].endswith(" \\")
    assert lines[start + 1].startswith("    ")
    assert lines[start + 1][4] != " "
    assert all(len(line) <= 80 for line in lines)


async def test_legacy_v6_header_and_show_sensitive(state: RouterState) -> None:
    v6 = RouterState(legacy_v6=True)
    v6.add_secret("alice", password="pw")
    async with RouterOSServer(v6) as router, connect(router) as conn:
        assert await run(conn, "/export show-sensitive") == (
            "expected end of command (line 1 column 9)\r\n"
        )
        lines = (await run(conn, "/export")).split("\r\n")
        assert V6_HEADER.match(lines[0])
        assert "add name=alice password=pw" in lines
        assert (await run(conn, "/ppp secret print")).startswith(" #   NAME ")


async def test_backup_save_then_sftp_fetch_has_the_magic(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    assert await run(conn, "/system backup save name=plain dont-encrypt=yes") == (
        "Configuration backup saved\r\n"
    )
    await run(conn, '/system backup save name=sealed password="pass word"')
    assert "name=plain.backup type=backup" in await run(conn, "/file print terse")
    async with conn.start_sftp_client() as sftp:
        for path, magic in (("plain.backup", MAGIC_PLAIN), ("/sealed.backup", MAGIC_AES)):
            async with sftp.open(path, "rb") as remote:
                data = await remote.read()
            assert isinstance(data, bytes)
            assert struct.unpack("<I", data[:4])[0] == magic
            assert len(data) > 16
            assert (await sftp.stat(path)).size == len(data)
        assert sorted(await sftp.listdir("/")) == [".", "..", "plain.backup", "sealed.backup"]
        await sftp.remove("/sealed.backup")
    assert await run(conn, "/file remove plain.backup") == ""
    assert state.files == {}
    assert await run(conn, "/file remove plain.backup") == "no such item\r\n"


async def test_sftp_get_copies_a_file(
    conn: asyncssh.SSHClientConnection, state: RouterState, tmp_path: object
) -> None:
    state.files["big.backup"] = bytes(range(256)) * 4000
    target = f"{tmp_path}/big.backup"
    async with conn.start_sftp_client() as sftp:
        await sftp.get("big.backup", target)
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.get("nothing.backup", target)
    with open(target, "rb") as local:  # noqa: ASYNC230 - small local file in a test
        assert local.read() == state.files["big.backup"]


async def test_drop_during_export_loses_the_connection(
    router: RouterOSServer, state: RouterState
) -> None:
    state.add_secret("alice", password="pw")
    async with connect(router) as conn:
        full = await run(conn, "/export")
    state.drop_during_export = True
    async with connect(router) as conn:
        result = await conn.run("/export", check=True)  # check=True does not raise here
        assert result.exit_status is None
        assert isinstance(result.stdout, str)
        assert 0 < len(result.stdout) < len(full)
        assert full.split("\r\n", 1)[1].startswith(result.stdout.split("\r\n", 1)[1])
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("/system identity print")


async def test_export_delay_holds_the_output(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    state.export_delay = 0.5
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await conn.run("/export")


async def test_several_commands_over_one_connection(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    for i in range(10):
        await run(conn, f"/ppp secret add name=user{i} password=pw{i} service=pppoe")
    outputs = await asyncio.gather(
        *(run(conn, f"/ppp secret print terse where name=user{i}") for i in range(10))
    )
    assert [o.split()[1] for o in outputs] == [f"name=user{i}" for i in range(10)]
    assert len(state.exec_commands) == 20


async def test_interactive_shell_prompt(conn: asyncssh.SSHClientConnection) -> None:
    process = await conn.create_process()
    assert await process.stdout.readuntil("> ") == "[admin@MikroTik] > "
    process.stdin.write("/system identity print\n")
    assert await process.stdout.readuntil("> ") == "  name: MikroTik\r\n[admin@MikroTik] > "
    process.stdin.write_eof()
    await process.wait()


async def test_fleet_of_routers_shares_the_host_key() -> None:
    async with RouterFleet(5) as fleet:
        assert len({router.port for router in fleet}) == 5
        assert len({router.host_key.public_data for router in fleet}) == 1
        for i, router in enumerate(fleet):
            async with connect(router) as conn:
                assert await run(conn, "/system identity print") == f"  name: router-{i}\r\n"
                async with conn.start_sftp_client() as sftp:
                    assert await sftp.listdir(".") == [".", ".."]


# -- behaviour taken from real routers (each test names its source, see ROUTEROS.md) ----------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("7.16.1", "Configuration backup saved\r\n"),
        # eworm-de/routeros-scripts#90 (7.17.2), beeyev/...-backup-and-update#80 (7.22.2)
        ("7.17.2", "Saving system configuration\r\nConfiguration backup saved\r\n"),
        ("6.49.17", "Configuration backup saved\r\n"),
    ],
)
async def test_backup_save_output_follows_the_version(version: str, expected: str) -> None:
    state = RouterState(version=version)
    async with RouterOSServer(state) as router, connect(router) as conn:
        assert await run(conn, "/system backup save name=b dont-encrypt=yes") == expected
    assert "b.backup" in state.files


async def test_a_failed_backup_save_prints_three_lines_and_writes_nothing() -> None:
    # beeyev/Mikrotik-RouterOS-automatic-backup-and-update#62, RouterOS 7.16.1
    state = RouterState(version="7.16.1", backup_save_error="invalid file name")
    async with RouterOSServer(state) as router, connect(router) as conn:
        out = await run(conn, '/system backup save name=b dont-encrypt=yes; :put "after"')
    assert out == (
        "Saving system configuration\r\nFailed to save system configuration backup\r\n"
        "invalid file name\r\n"
    )
    assert state.files == {}


@pytest.mark.parametrize(
    ("version", "line"),
    [
        ("7.16.1", '#error exporting "/ip/firewall/calea" (timeout)'),  # manual, since 7.11
        ("7.10.2", "#error exporting /ip firewall calea"),
        ("6.49.17", "#error exporting /ip firewall calea"),
    ],
)
async def test_a_menu_that_times_out_is_an_error_line_and_the_export_goes_on(
    version: str, line: str
) -> None:
    state = RouterState(version=version, export_timeouts=["/ip/firewall/calea"])
    state.add_secret("alice", password="pw")
    async with RouterOSServer(state) as router, connect(router) as conn:
        lines = (await run(conn, '/export; :put "end-marker"')).split("\r\n")
    assert line in lines
    assert "/ppp secret" in lines  # carried on after the error
    assert lines[-2:] == ["end-marker", ""]


async def test_an_interrupted_export_stops_the_line() -> None:
    # a cut v6 export ending `#error exporting /ip socks` then `#interrupted` (ROUTEROS.md)
    state = RouterState(legacy_v6=True, export_interrupted_at="/ip/socks")
    state.add_secret("alice", password="pw")
    async with RouterOSServer(state) as router, connect(router) as conn:
        lines = (await run(conn, '/export; :put "end-marker"')).split("\r\n")
    assert lines[-3:] == ["#error exporting /ip socks", "#interrupted", ""]
    assert "end-marker" not in lines
    assert "/ppp secret" not in lines  # /ppp sorts after /ip: never exported


async def test_a_clean_cut_ends_at_a_line_with_exit_status_zero(state: RouterState) -> None:
    # Oxidized #1966 (exit-status and channel close after a cut /export), #3867 (~128 KiB)
    for i in range(40):
        state.add_secret(f"user{i}", password="pw", comment="x" * 30)
    async with RouterOSServer(state) as router, connect(router) as conn:
        full = await run(conn, '/export; :put "end-marker"')
        state.export_cut_at = len(full) // 2
        cut = await run(conn, '/export; :put "end-marker"')  # run() asserts exit status 0
    assert full.endswith("end-marker\r\n")
    assert "end-marker" not in cut
    assert cut.endswith("\r\n")
    assert 0 < len(cut) <= len(full) // 2
    assert full.split("\r\n", 1)[1].startswith(cut.split("\r\n", 1)[1])


async def test_a_flash_device_writes_backups_under_flash() -> None:
    # MikroTik manual, File: persistent files live under `flash/`; netmiko's
    # file_system="flash"
    state = RouterState(flash=True)
    async with RouterOSServer(state) as router, connect(router) as conn:
        await run(conn, "/system backup save name=isp-7-abc dont-encrypt=yes")
        assert list(state.files) == ["flash/isp-7-abc.backup"]
        assert await run(conn, '/file print count-only where name="isp-7-abc.backup"') == "0\r\n"
        listed = await run(conn, '/file print detail where name~"isp-7-abc"')
        assert listed.startswith(" 1 name=flash/isp-7-abc.backup type=backup size=")  # 0: flash
        assert listed.endswith("\r\n\r\n")  # every item is followed by an empty line
        everything = await run(conn, "/file print detail")
        assert everything.startswith(" 0 name=flash type=disk last-modified=")
        async with conn.start_sftp_client() as sftp:
            assert sorted(await sftp.listdir("/")) == [".", "..", "flash"]
            assert await sftp.listdir("flash") == [".", "..", "isp-7-abc.backup"]
            assert await sftp.isdir("/flash")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat("isp-7-abc.backup")
            size = (await sftp.stat("/flash/isp-7-abc.backup")).size
        assert size == len(state.files["flash/isp-7-abc.backup"])
        assert await run(conn, '/file remove [find name="isp-7-abc.backup"]') == ""
        assert list(state.files) == ["flash/isp-7-abc.backup"]  # a silent no-op
        await run(conn, '/file remove [find name="flash/isp-7-abc.backup"]')
    assert state.files == {}


async def test_v6_file_print_detail_quotes_every_string() -> None:
    # the manual's v6 capture: ` 1 name="sample.txt" type=".txt file" size=5 creation-time=...`
    state = RouterState(legacy_v6=True, flash=True)
    state.files["flash/x.backup"] = b"\x88\xac\xa1\xb1" + bytes(2000)
    async with RouterOSServer(state) as router, connect(router) as conn:
        listed = (await run(conn, "/file print detail")).split("\r\n")
    assert listed[0].startswith(' 0 name="flash" type="directory" creation-time=')
    assert listed[2].startswith(' 1 name="flash/x.backup" type="backup" size=2.0KiB creation-')


@pytest.mark.parametrize(
    ("save", "magic"),
    [("dont-encrypt=yes", MAGIC_PLAIN), ('password="pw"', MAGIC_AES)],
)
async def test_a_backup_grows_in_the_background_to_the_length_in_its_header(
    save: str, magic: int
) -> None:
    # MikroTik manual, File: NAND write-back delays flash writes by up to 40 s;
    # the u32 LE total length at offset 4 (ROUTEROS.md)
    state = RouterState(backup_write_time=0.4)
    state.add_secret("alice", password="pw", comment="c" * 200)
    async with RouterOSServer(state) as router, connect(router) as conn:
        await run(conn, f"/system backup save name=b {save}")
        sizes = [len(state.files["b.backup"])]
        while True:
            head = state.files["b.backup"]
            total = struct.unpack("<I", head[4:8])[0] if len(head) >= 8 else None
            if total == len(head):
                break
            await asyncio.sleep(0.05)
            sizes.append(len(state.files["b.backup"]))
    data = state.files["b.backup"]
    assert struct.unpack("<II", data[:8]) == (magic, len(data))
    assert sizes[0] < len(data)
    assert sizes == sorted(sizes)


async def test_a_stalled_background_write_never_completes() -> None:
    state = RouterState(backup_write_stalls=True)
    async with RouterOSServer(state) as router, connect(router) as conn:
        await run(conn, "/system backup save name=b dont-encrypt=yes")
        await asyncio.sleep(0.05)
        data = state.files["b.backup"]
        assert 8 < len(data) < struct.unpack("<I", data[4:8])[0]
        await run(conn, "/file remove [find name=b.backup]")
    assert state.files == {}


async def test_both_already_exists_wordings() -> None:
    # `failure: item with this name already exists` in v7 menus (beeyev #80, 7.22.2);
    # /ppp secret keeps its own wording on v6 and v7
    state = RouterState(item_exists_wording=True)
    async with RouterOSServer(state) as router, connect(router) as conn:
        await run(conn, "/ppp profile add name=p")
        assert await run(conn, "/ppp profile add name=p") == (
            "failure: item with this name already exists\r\n"
        )
        await run(conn, "/ppp secret add name=s")
        assert await run(conn, "/ppp secret add name=s") == (
            "failure: secret with the same name already exists\r\n"
        )


async def test_hex_escapes_must_be_upper_case(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    # Manual:Scripting: `\XX` takes two upper-case hex digits
    await run(conn, '/ppp secret add name=a comment="caf\\C3\\A9"')
    await run(conn, '/ppp secret add name=b comment="caf\\c3\\a9"')
    assert state.secret("a").comment == "café"
    assert state.secret("b").comment == "cafc3\a9"  # `\c` is `c`, `\a` the bell


async def test_conditional_add_or_set_in_one_statement(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    # ROUTEROS.md: `:if ([:len [/ppp profile find name="p"]] = 0) do={...} else={...}`
    upsert = (
        ':if ([:len [/ppp profile find name="p"]] = 0) do={/ppp profile add name="p" '
        'rate-limit="{rate}"} else={/ppp profile set [find name="p"] rate-limit="{rate}"}'
    )
    assert await run(conn, upsert.replace("{rate}", "1M/2M")) == ""
    assert await run(conn, upsert.replace("{rate}", "3M/4M")) == ""
    assert [(p.name, p.rate_limit) for p in state.profiles if not p.builtin] == [("p", "3M/4M")]
    assert state.writes == [
        '/ppp profile add name="p" rate-limit="1M/2M"',
        '/ppp profile set [find name="p"] rate-limit="3M/4M"',
    ]
    assert await run(conn, ':put [:len [/ppp profile find name="p"]]') == "1\r\n"
    assert await run(conn, ':if (1 = 2) do={:put "yes"} else={:put "no"}') == "no\r\n"


async def test_a_compile_error_inside_a_block_runs_nothing(
    conn: asyncssh.SSHClientConnection, state: RouterState
) -> None:
    out = await run(conn, ':put "first"; :if (1 = 1) do={/ppp secret frob}')
    assert out.startswith("bad command name frob")
    assert "first" not in out
    assert await run(conn, ":if (1 = 1) do={/ppp secret add name=x") == (
        "syntax error (line 1 column 16)\r\n"  # where the unclosed `{` opens
    )
    assert state.secrets == []


async def test_policies_gate_writes_sftp_and_secrets(state: RouterState) -> None:
    state.add_secret("alice", password="s3cr3t")
    state.revoke("admin", "sensitive", "ftp")
    async with RouterOSServer(state) as router, connect(router) as conn:
        # v7 without the sensitive policy leaves secrets out even with show-sensitive
        assert "s3cr3t" not in await run(conn, "/export show-sensitive")
        with pytest.raises(asyncssh.SFTPError):
            async with conn.start_sftp_client() as sftp:
                await sftp.listdir("/")
        state.revoke("admin", "write")
        assert await run(conn, "/ppp secret add name=b") == "not enough permissions (9)\r\n"
