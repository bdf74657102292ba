"""The emulated router's configuration, its fault knobs, and what it recorded.

A `RouterState` is plain data: tests build one, hand it to a `RouterOSServer`, then assert on
it (`state.secret("alice").disabled`, `state.executed`, `state.logins`). The knobs change how
the router answers (`permissions_denied`, `legacy_v6`, `drop_during_export`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

V7_VERSION = "7.16.1"
V6_VERSION = "6.49.17"


@dataclass
class Profile:
    name: str
    rate_limit: str = ""
    local_address: str = ""
    remote_address: str = ""
    comment: str = ""
    builtin: bool = False
    id: str = ""


@dataclass
class Secret:
    name: str
    password: str = ""
    service: str = "any"
    profile: str = "default"
    remote_address: str = ""
    comment: str = ""
    disabled: bool = False
    id: str = ""


@dataclass
class ActiveSession:
    name: str
    address: str
    service: str = "pppoe"
    caller_id: str = ""
    uptime: str = "1h2m3s"
    id: str = ""


@dataclass
class InjectedError:
    """Answer `message` instead of running the next statement containing `match`."""

    message: str
    match: str = ""
    times: int = 1  # negative: forever


def _builtin_profiles() -> list[Profile]:
    return [Profile("default", builtin=True, id="*0"),
            Profile("default-encryption", builtin=True, id="*FFFFFFFE")]


@dataclass
class RouterState:
    """One router: configuration, knobs, and records of what happened.

    Knobs:
        permissions_denied: write commands answer `not enough permissions (9)`.
        legacy_v6: RouterOS 6 (v6 export header, passwords always shown, `show-sensitive`
            rejected with `expected end of command (line 1 column 9)`).
        drop_during_export: send about half of the export, then drop the TCP connection.
        export_delay: seconds to wait before an export's output.
        command_delay: seconds to wait before running any exec command.
        backup_delay: seconds before `/system backup save` writes its file (0: at once).
        sftp_denied: every SFTP operation fails with permission denied (no `ftp` policy).
        always_allow_password_login: keep password login when the user has SSH keys.
    """

    identity: str = "MikroTik"
    version: str = ""
    model: str = "RB5009UG+S+"
    serial_number: str = "HD1234567"
    software_id: str = "ABCD-1234"
    users: dict[str, str] = field(default_factory=lambda: {"admin": "secret"})
    authorized_keys: dict[str, list[str]] = field(default_factory=dict)  # OpenSSH public keys
    profiles: list[Profile] = field(default_factory=_builtin_profiles)
    secrets: list[Secret] = field(default_factory=list)
    active: list[ActiveSession] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

    permissions_denied: bool = False
    legacy_v6: bool = False
    drop_during_export: bool = False
    export_delay: float = 0.0
    command_delay: float = 0.0
    backup_delay: float = 0.0
    sftp_denied: bool = False
    always_allow_password_login: bool = False
    injected: list[InjectedError] = field(default_factory=list)

    executed: list[str] = field(default_factory=list)  # statements that began running
    exec_commands: list[str] = field(default_factory=list)  # raw exec channel commands
    logins: list[str] = field(default_factory=list)  # login names as sent (`admin+ct`)
    log: list[str] = field(default_factory=list)  # `/log info ...` messages
    variables_read: list[str] = field(default_factory=list)  # `$name` references evaluated
    reboots: int = 0
    exports: int = 0

    _next_id: int = field(default=1, init=False, repr=False)
    _last_export: datetime | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.version:
            self.version = V6_VERSION if self.legacy_v6 else V7_VERSION

    # -- lookups and setup helpers -------------------------------------------------------

    def new_id(self) -> str:
        item_id = f"*{self._next_id:X}"
        self._next_id += 1
        return item_id

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def secret(self, name: str) -> Secret | None:
        return next((s for s in self.secrets if s.name == name), None)

    def session(self, name: str) -> ActiveSession | None:
        return next((a for a in self.active if a.name == name), None)

    def add_profile(self, name: str, **fields: Any) -> Profile:
        profile = Profile(name, id=self.new_id(), **fields)
        self.profiles.append(profile)
        return profile

    def add_secret(self, name: str, **fields: Any) -> Secret:
        secret = Secret(name, id=self.new_id(), **fields)
        self.secrets.append(secret)
        return secret

    def add_active(self, name: str, address: str, **fields: Any) -> ActiveSession:
        session = ActiveSession(name, address, id=self.new_id(), **fields)
        self.active.append(session)
        return session

    # -- fault injection -----------------------------------------------------------------

    def fail_next(self, message: str = "failure: injected error", match: str = "") -> None:
        """The next statement (containing `match`, if given) prints `message` instead."""
        self.injected.append(InjectedError(message, match))

    def inject_error(self, message: str, match: str = "", times: int = -1) -> None:
        """Statements containing `match` print `message` (`times` times; negative: always)."""
        self.injected.append(InjectedError(message, match, times))

    def take_injected(self, statement: str) -> str | None:
        for injected in self.injected:
            if injected.match in statement:
                injected.times -= 1
                if injected.times == 0:
                    self.injected.remove(injected)
                return injected.message
        return None

    # -- clock ---------------------------------------------------------------------------

    def export_time(self) -> datetime:
        """Now, but strictly after the previous export, so every export header differs."""
        now = datetime.now().replace(microsecond=0)
        if self._last_export is not None and now <= self._last_export:
            now = self._last_export + timedelta(seconds=1)
        self._last_export = now
        self.exports += 1
        return now
