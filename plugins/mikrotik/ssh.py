"""One SSH connection to one router per hook call, host key pinned; the error boundary.

Every asyncssh or socket error of the plugin becomes a :mod:`.errors` class here and
nowhere else (``raise ... from exc``). A hook opens one :class:`RouterSession` (the key
exchange is what costs CPU), runs each command on its own exec channel (RouterOS answers
an exec channel without echo, prompt or paging: nothing to screen-scrape), and fetches
files over SFTP on the same connection.

Every wait (login, each command, each SFTP operation, closing) is the setting's cap cut
to what is left of the hook's :class:`~.budget.Budget`, so no sequence of steps can run
past the hook's timeout.

Host keys: trust on first use. With no key pinned, the key the router presents is
accepted and offered as :attr:`RouterSession.learned_host_key` for the caller to save;
with a key pinned, any other key is refused *before* the password is sent
(:class:`HostKeyChanged`). The check is done in ``validate_host_public_key`` with the
client's default host key algorithms, so a router that now presents a key of another
type (RSA -> ed25519) is reported as a changed key, not as a key exchange failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final

import asyncssh

from .budget import Budget
from .errors import (
    HostKeyChanged,
    MikrotikError,
    RouterAuthFailed,
    RouterCommandError,
    RouterConnectionLost,
    RouterPermissionDenied,
    RouterTimeout,
    RouterUnreachable,
)
from .routeros import PERMISSION, Statement, router_error, unexpected_output
from .settings import MikrotikSettings

log = logging.getLogger(__name__)

LOGIN_OPTIONS: Final = "ct"  # no colours, no terminal detection (ROUTEROS.md)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to log in; ``host_key`` is the pinned OpenSSH public key, if any."""

    device_id: int
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    host_key: str | None = None

    @property
    def login(self) -> str:
        """``admin+ct``; a name that already carries ``+`` options is left alone."""
        return self.username if "+" in self.username else f"{self.username}+{LOGIN_OPTIONS}"

    @property
    def where(self) -> dict[str, Any]:
        """What every error says about the router (never the credentials)."""
        return {"device_id": self.device_id, "host": self.host, "port": self.port}


def openssh_line(key: asyncssh.SSHKey) -> str:
    """``ssh-rsa AAAA...``: the form pinned in ``device.host_key``."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def parse_pinned(target: Target) -> asyncssh.SSHKey | None:
    """The pinned key; a ``known_hosts`` line (``host ssh-rsa AAAA``) is accepted too."""
    if not target.host_key:
        return None
    words = target.host_key.split()
    for start in range(min(2, len(words))):
        with suppress(asyncssh.KeyImportError, ValueError):
            return asyncssh.import_public_key(" ".join(words[start : start + 2]))
    raise HostKeyChanged(
        f"device {target.device_id}: the pinned host key is not an OpenSSH public key; "
        "re-trust the router (PUT /devices/{id}/trust) to pin the key it presents",
        **target.where,
    )


class _PinningClient(asyncssh.SSHClient):
    """Accepts the pinned key only (any key when none is pinned) and remembers the offer."""

    def __init__(self, pinned: asyncssh.SSHKey | None) -> None:
        self.pinned = pinned
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.presented = key
        return self.pinned is None or key.public_data == self.pinned.public_data


class RouterSession:
    """An authenticated connection to one router; use :func:`open_session`."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        target: Target,
        settings: MikrotikSettings,
        learned_host_key: str | None,
        budget: Budget,
    ) -> None:
        self._conn = conn
        self._sftp: asyncssh.SFTPClient | None = None
        self.target = target
        self.settings = settings
        self.learned_host_key = learned_host_key
        self.budget = budget

    # -- commands --------------------------------------------------------------------

    async def output(
        self, command: Statement, *, limit: float | None = None, budgeted: bool = True
    ) -> bytes:
        """Run ``command`` on its own exec channel and return stdout as sent, unchecked.

        The connection dropping mid-command ends the channel without an exit status and
        with the output cut short: that is :class:`RouterConnectionLost`, never a result.
        ``limit`` (default ``command_timeout``) is cut to what is left of the budget,
        unless not ``budgeted`` (clean-up after a failure runs in the budget's reserve).
        """
        limit = limit or self.settings.command_timeout
        if budgeted:
            limit = self.budget.limit(limit)
        with self._boundary("command", command.label, limit):
            async with asyncio.timeout(limit):
                result = await self._conn.run(command.text, check=False, encoding=None)
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        if result.exit_status is None:
            raise RouterConnectionLost(
                f"connection to the router lost during '{command.label}' after "
                f"{len(stdout)} bytes of output; nothing from it was used",
                command=command.label,
                **self.target.where,
            )
        return stdout

    async def run(
        self,
        command: Statement,
        *,
        quiet: bool = True,
        allowed: tuple[str, ...] = (),
        limit: float | None = None,
        budgeted: bool = True,
    ) -> str:
        """Run ``command``; an error text raises :class:`RouterCommandError`.

        ``quiet``: the command prints nothing on success, so any other output (except
        the ``allowed`` lines) is an error too. ``limit``: seconds, default
        ``command_timeout``.
        """
        raw = await self.output(command, limit=limit, budgeted=budgeted)
        text = raw.decode("utf-8", errors="replace")
        message = router_error(text)
        if message is None and quiet:
            message = unexpected_output(text, allowed)
        if message is not None:
            raise self.command_error(command, message)
        return text

    def command_error(self, command: Statement, message: str) -> RouterCommandError:
        cls = RouterPermissionDenied if message.startswith(PERMISSION) else RouterCommandError
        hint = (
            ": give the router user the write (and for backups sensitive, ftp) policies"
            if cls is RouterPermissionDenied
            else ""
        )
        return cls(
            f"router {self.target.host} refused '{command.label}': {message}{hint}",
            router_message=message,
            command=command.label,
            **self.target.where,
        )

    # -- files -----------------------------------------------------------------------

    async def file_size(self, path: str) -> int | None:
        """Size of a file on the router's flash, or None when it does not exist (yet)."""
        sftp = await self._sftp_client()
        limit = self.budget.limit(self.settings.command_timeout)
        with self._boundary("sftp", f"stat {path}", limit):
            async with asyncio.timeout(limit):
                try:
                    attrs = await sftp.stat(path)
                except asyncssh.SFTPNoSuchFile:
                    return None
        return int(attrs.size or 0)

    async def read_file(self, path: str) -> bytes:
        sftp = await self._sftp_client()
        limit = self.budget.limit(self.settings.command_timeout)
        with self._boundary("sftp", f"read {path}", limit):
            async with asyncio.timeout(limit):
                async with sftp.open(path, "rb") as remote:
                    data = await remote.read()
        if not isinstance(data, bytes):  # pragma: no cover - 'rb' always gives bytes
            raise TypeError(f"SFTP read gave {type(data).__name__}")
        return data

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            limit = self.budget.limit(self.settings.command_timeout)
            with self._boundary("sftp", "start SFTP", limit):
                async with asyncio.timeout(limit):
                    self._sftp = await self._conn.start_sftp_client()
        return self._sftp

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self._conn.close()
        with suppress(TimeoutError, asyncssh.Error, OSError):
            async with asyncio.timeout(self.budget.close):
                await self._conn.wait_closed()

    @contextmanager
    def _boundary(self, phase: str, label: str, limit: float) -> Iterator[None]:
        try:
            yield
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise translate(exc, self.target, phase, label, limit) from exc


async def connect(
    target: Target, settings: MikrotikSettings, budget: Budget | None = None
) -> RouterSession:
    """Log in to the router (host key checked before the password is sent)."""
    budget = budget or Budget.unbounded()
    client = _PinningClient(parse_pinned(target))
    limit = budget.limit(settings.connect_timeout)
    try:
        async with asyncio.timeout(limit):
            conn = await asyncssh.connect(
                target.host,
                target.port,
                username=target.login,
                password=target.password,
                client_factory=lambda: client,
                known_hosts=([], [], []),  # validation on, every decision in the client
                config=None,  # no ~/.ssh/config, keys, agent, CA files: nothing from disk
                client_keys=None,
                agent_path=None,
                x509_trusted_certs=None,
                x509_trusted_cert_paths=None,
                gss_auth=False,
                gss_kex=False,
                host_based_auth=False,
                public_key_auth=False,
                preferred_auth="password,keyboard-interactive",
                login_timeout=limit,
                keepalive_interval=0,
            )
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        if (
            client.pinned is not None
            and client.presented is not None
            and (client.presented.public_data != client.pinned.public_data)
        ):
            raise HostKeyChanged(
                f"router {target.host}:{target.port} presented host key "
                f"{fingerprint(client.presented)} but {fingerprint(client.pinned)} is pinned "
                f"for device {target.device_id}: refusing to log in. If the router was "
                "replaced or reinstalled, re-trust it (PUT /devices/{id}/trust)",
                pinned=fingerprint(client.pinned),
                presented=fingerprint(client.presented),
                **target.where,
            ) from exc
        raise translate(exc, target, "connect", "login", limit) from exc
    learned = None
    if client.pinned is None and client.presented is not None:
        learned = openssh_line(client.presented)
        log.info(
            "router host key trusted on first use",
            extra={**target.where, "fingerprint": fingerprint(client.presented)},
        )
    return RouterSession(conn, target, settings, learned, budget)


@asynccontextmanager
async def open_session(
    target: Target, settings: MikrotikSettings, budget: Budget | None = None
) -> AsyncIterator[RouterSession]:
    session = await connect(target, settings, budget)
    try:
        yield session
    finally:
        await session.close()


def translate(
    exc: BaseException, target: Target, phase: str, label: str, limit: float
) -> MikrotikError:
    """The one mapping from asyncssh/socket errors to this plugin's errors."""
    where = target.where
    router = f"router {target.host}:{target.port}"
    if isinstance(exc, TimeoutError):
        what = "log in" if phase == "connect" else f"answer '{label}'"
        return RouterTimeout(
            f"{router} did not {what} within {limit:g} s",
            phase=phase,
            command=None if phase == "connect" else label,
            **where,
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return RouterAuthFailed(
            f"{router} refused the login of user {target.username!r}: check the device's "
            "username and password (and that password login is allowed for that user)",
            **where,
        )
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return RouterPermissionDenied(
            f"{router} refused SFTP ({label}): the router user needs the ftp policy",
            router_message=str(exc.reason),
            **where,
        )
    if isinstance(exc, asyncssh.SFTPError):
        return RouterCommandError(
            f"{router}: SFTP {label} failed: {exc.reason}", router_message=str(exc.reason), **where
        )
    if phase == "connect":
        reason = exc.reason if isinstance(exc, asyncssh.Error) else (str(exc) or type(exc).__name__)
        return RouterUnreachable(f"cannot connect to {router}: {reason}", **where)
    reason = exc.reason if isinstance(exc, asyncssh.Error) else (str(exc) or type(exc).__name__)
    return RouterConnectionLost(
        f"connection to {router} lost during '{label}': {reason}", command=label, **where
    )
