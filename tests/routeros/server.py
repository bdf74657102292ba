"""An asyncssh server that answers like a MikroTik RouterOS router.

Exec channels run their command through the interpreter and always end with exit status 0 and
an empty stderr, errors and cut exports included (RouterOS prints errors as text). The banner is
exactly `SSH-2.0-ROSSSH`, the host key RSA 2048 (generated once per process and shared), and the
login name may carry console options after `+` (`admin+ct`). SFTP serves the router's in-memory
files.

Many routers can run in one process (`RouterFleet`): each costs one listening socket and a
`RouterState`; they share the host key.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

import asyncssh

from .interpreter import Interpreter
from .sftp import MemorySFTPServer
from .state import RouterState

_key_lock = threading.Lock()
_default_key: list[asyncssh.SSHKey] = []


def default_host_key() -> asyncssh.SSHKey:
    """The process-wide RSA 2048 host key (slow to generate, so made once; thread-safe)."""
    with _key_lock:
        if not _default_key:
            _default_key.append(asyncssh.generate_private_key("ssh-rsa", key_size=2048))
        return _default_key[0]


class _Connection(asyncssh.SSHServer):
    """Per-connection callbacks: authentication against the router's users."""

    def __init__(self, router: RouterOSServer) -> None:
        self._router = router
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._router.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._router.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        self._router.state.logins.append(username)
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        state = self._router.state
        user = username.split("+", 1)[0]
        if state.authorized_keys.get(user) and not state.always_allow_password_login:
            return False
        return user in state.users and state.users[user] == password

    def public_key_auth_supported(self) -> bool:
        return bool(self._router.state.authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = username.split("+", 1)[0]
        keys = self._router.state.authorized_keys.get(user, [])
        return any(asyncssh.import_public_key(k).public_data == key.public_data for k in keys)


class RouterOSServer:
    """One emulated router listening on `host`; `port=0` picks a free port (see `.port`).

    Use `async with RouterOSServer(state) as router:` then connect to `router.port` as
    `admin`/`secret` (the users are `state.users`). Pass `host_key` to present another key.
    """

    def __init__(
        self,
        state: RouterState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        host_key: asyncssh.SSHKey | None = None,
        shell: bool = True,
    ) -> None:
        self.state = state if state is not None else RouterState()
        self.host = host
        self.port = port
        self.shell = shell
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._host_key = host_key
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def host_key(self) -> asyncssh.SSHKey:
        return self._host_key if self._host_key is not None else default_host_key()

    @property
    def known_hosts_line(self) -> str:
        """A known_hosts line for this router (`[127.0.0.1]:port ssh-rsa AAAA...`)."""
        public = self.host_key.export_public_key().decode().strip()
        return f"[{self.host}]:{self.port} {public}"

    async def start(self) -> None:
        if self._host_key is None and not _default_key:
            await asyncio.to_thread(default_host_key)
        self._acceptor = await asyncssh.create_server(
            lambda: _Connection(self),
            self.host,
            self.port,
            server_host_keys=[self.host_key],
            server_version="ROSSSH",  # asyncssh prefixes "SSH-2.0-"
            process_factory=self._process,
            sftp_factory=lambda chan: MemorySFTPServer(chan, self.state),
            encoding="utf-8",
        )
        self.port = self._acceptor.get_port()

    async def stop(self) -> None:
        """Stop listening and close every open connection (asyncssh leaves them open)."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        connections = list(self.connections)
        for conn in connections:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in connections))

    async def __aenter__(self) -> RouterOSServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _process(self, process: asyncssh.SSHServerProcess[str]) -> None:
        user = str(process.get_extra_info("username") or "").split("+", 1)[0]
        if process.subsystem is not None:  # only "sftp" exists, and asyncssh serves it
            process.exit(1)
            return
        if process.command is None:
            await self._shell(process, user)
            return
        state = self.state
        state.exec_commands.append(process.command)
        if state.command_delay:
            await asyncio.sleep(state.command_delay)
        result = Interpreter(state, user).run(process.command)
        output = result.output
        if result.export_span is not None:
            if state.export_delay:
                await asyncio.sleep(state.export_delay)
            start, end = result.export_span
            if state.drop_during_export:
                process.stdout.write(output[:start + (end - start) // 2])
                await process.stdout.drain()
                await asyncio.sleep(0.02)  # let the partial output reach the socket
                process.channel.get_connection().abort()  # TCP drop, no SSH disconnect
                return
            if state.export_cut_at is not None:
                # A clean cut (Oxidized #1966, #3867): the output stops at a line end
                # inside the export, then exit status 0 and a normal channel close.
                limit = min(start + state.export_cut_at, end)
                output = output[: max(output.rfind("\r\n", start, limit) + 2, start)]
        process.stdout.write(output)
        await process.stdout.drain()
        process.exit(0)

    async def _shell(self, process: asyncssh.SSHServerProcess[str], user: str) -> None:
        """A minimal interactive console: prompt, one command per line, `quit` to leave."""
        if not self.shell:
            process.exit(1)
            return
        process.stdout.write(f"[{user}@{self.state.identity}] > ")
        while True:
            try:
                line = await process.stdin.readline()
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived):
                continue
            command = line.strip()
            if not line or command in ("quit", "/quit"):
                break
            if command:
                process.stdout.write(Interpreter(self.state, user).run(command).output)
            process.stdout.write(f"[{user}@{self.state.identity}] > ")
        process.exit(0)


class RouterFleet:
    """`count` routers in this process, sharing one host key, for fleet tests and benchmarks.

    `state_factory(i)` builds router i's state (default: identity `router-<i>`).
    """

    def __init__(
        self,
        count: int,
        *,
        state_factory: Callable[[int], RouterState] | None = None,
        host_key: asyncssh.SSHKey | None = None,
    ) -> None:
        factory = state_factory or (lambda i: RouterState(identity=f"router-{i}"))
        self._host_key = host_key
        self.routers = [RouterOSServer(factory(i), host_key=host_key) for i in range(count)]

    async def start(self) -> None:
        if self._host_key is None:
            await asyncio.to_thread(default_host_key)
        try:
            async with asyncio.TaskGroup() as group:
                for router in self.routers:
                    group.create_task(router.start())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        async with asyncio.TaskGroup() as group:
            for router in self.routers:
                group.create_task(router.stop())

    async def __aenter__(self) -> RouterFleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __len__(self) -> int:
        return len(self.routers)

    def __iter__(self) -> Iterator[RouterOSServer]:
        return iter(self.routers)

    def __getitem__(self, index: int) -> RouterOSServer:
        return self.routers[index]
