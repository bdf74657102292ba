"""Connection, host key pinning and the error boundary (plugins/mikrotik/ssh.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from tests.mikrotik.conftest import target_for
from tests.mikrotik.loaded import errors, routeros, ssh
from tests.mikrotik.loaded import settings as settings_module
from tests.routeros import RouterOSServer, RouterState


def identity() -> Any:
    return routeros.Command("/system identity", "print")


async def test_first_connection_learns_the_host_key_and_logs_in_with_ct(
    router: RouterOSServer, state: RouterState, mt_settings: Any
) -> None:
    async with ssh.open_session(target_for(router), mt_settings) as session:
        assert await session.run(identity(), quiet=False) == "  name: MikroTik\r\n"
    expected = router.host_key.export_public_key().decode().split()[:2]
    assert session.learned_host_key == " ".join(expected)
    assert state.logins == ["admin+ct"]


async def test_a_pinned_key_that_matches_connects_and_learns_nothing(
    router: RouterOSServer, mt_settings: Any
) -> None:
    pinned = router.host_key.export_public_key().decode().strip()
    async with ssh.open_session(target_for(router, host_key=pinned), mt_settings) as session:
        await session.run(identity(), quiet=False)
    assert session.learned_host_key is None


@pytest.mark.parametrize("algorithm", ["ssh-rsa", "ssh-ed25519"])
async def test_changed_host_key_is_refused_before_the_password_is_sent(
    state: RouterState, mt_settings: Any, algorithm: str
) -> None:
    async with RouterOSServer(state) as original:
        pinned = original.host_key.export_public_key().decode().strip()
        port = original.port
    options = {"key_size": 2048} if algorithm == "ssh-rsa" else {}
    other = asyncssh.generate_private_key(algorithm, **options)
    async with RouterOSServer(state, port=port, host_key=other) as impostor:
        target = target_for(impostor, host_key=pinned)
        with pytest.raises(errors.HostKeyChanged) as caught:
            await ssh.connect(target, mt_settings)
    assert caught.value.status_code == 409
    assert caught.value.extra["presented"] == other.get_fingerprint("sha256")
    assert "re-trust" in caught.value.detail
    assert state.logins == []  # never got as far as authentication


async def test_a_garbage_pinned_key_is_refused_with_advice(
    router: RouterOSServer, mt_settings: Any
) -> None:
    with pytest.raises(errors.HostKeyChanged, match="not an OpenSSH public key"):
        await ssh.connect(target_for(router, host_key="not a key"), mt_settings)


async def test_a_known_hosts_line_is_accepted_as_pinned_key(
    router: RouterOSServer, mt_settings: Any
) -> None:
    async with ssh.open_session(
        target_for(router, host_key=router.known_hosts_line), mt_settings
    ) as session:
        assert session.learned_host_key is None


async def test_wrong_password_is_an_auth_failure_without_the_password(
    router: RouterOSServer, mt_settings: Any
) -> None:
    with pytest.raises(errors.RouterAuthFailed) as caught:
        await ssh.connect(target_for(router, password="wrong-pass"), mt_settings)
    problem = caught.value.to_problem()
    assert problem["status"] == 502
    assert problem["device_id"] == 7
    assert "wrong-pass" not in str(problem)


async def test_connection_refused_is_unreachable(mt_settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = ssh.Target(device_id=1, host="127.0.0.1", port=port, username="a", password="b")
    with pytest.raises(errors.RouterUnreachable) as caught:
        await ssh.connect(target, mt_settings)
    assert caught.value.extra["port"] == port


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts and then says nothing (no SSH banner)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_silent_router_is_a_connect_timeout(silent_port: int) -> None:
    fast = settings_module.MikrotikSettings(connect_timeout=0.2)
    target = ssh.Target(device_id=1, host="127.0.0.1", port=silent_port, username="a", password="b")
    with pytest.raises(errors.RouterTimeout) as caught:
        await ssh.connect(target, fast)
    assert caught.value.status_code == 504
    assert caught.value.extra["phase"] == "connect"


async def test_slow_command_is_a_command_timeout(
    router: RouterOSServer, state: RouterState
) -> None:
    fast = settings_module.MikrotikSettings(command_timeout=0.2)
    async with ssh.open_session(target_for(router), fast) as session:
        state.command_delay = 1.0
        with pytest.raises(errors.RouterTimeout, match="did not answer '/system identity print'"):
            await session.run(identity(), quiet=False)


async def test_router_error_text_raises_with_the_router_message(
    session: Any, state: RouterState
) -> None:
    state.fail_next("failure: out of memory", match="identity")
    with pytest.raises(errors.RouterCommandError) as caught:
        await session.run(identity(), quiet=False)
    assert caught.value.extra["router_message"] == "failure: out of memory"
    assert caught.value.extra["command"] == "/system identity print"
    assert caught.value.status_code == 422


async def test_unexpected_output_of_a_quiet_command_is_an_error(
    session: Any, state: RouterState
) -> None:
    with pytest.raises(errors.RouterCommandError, match="name: MikroTik"):
        await session.run(identity())


async def test_permission_error_tells_which_policy_is_missing(
    session: Any, state: RouterState
) -> None:
    state.permissions_denied = True
    command = routeros.Command("/ppp secret", "add", {"name": "a"})
    with pytest.raises(errors.RouterPermissionDenied, match="policies"):
        await session.run(command)


async def test_every_command_runs_on_its_own_exec_channel_of_one_connection(
    session: Any, state: RouterState, router: RouterOSServer
) -> None:
    for _ in range(3):
        await session.run(identity(), quiet=False)
    assert state.exec_commands == ["/system identity print"] * 3
    assert state.logins == ["admin+ct"]
    assert len(router.connections) == 1
