"""The emulated router's configuration, its fault knobs, and what it recorded.

A `RouterState` is plain data: tests build one, hand it to a `RouterOSServer`, then assert on
it (`state.secret("alice").disabled`, `state.executed`, `state.logins`). The knobs change how
the router answers (`permissions_denied`, `legacy_v6`, `drop_during_export`, ...).

Behaviour that differs between RouterOS releases follows `version` (see `at_least`); each
knob and each version rule names the source it is taken from (ROUTEROS.md lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

V7_VERSION = "7.16.1"
V6_VERSION = "6.49.17"

# A user's policies on a router (`/user group`); the ones the emulator looks at are `write`
# (changing configuration), `ftp` (SFTP/SCP) and `sensitive` (seeing secrets).
FULL_POLICIES = frozenset({
    "local", "telnet", "ssh", "ftp", "reboot", "read", "write", "policy", "test", "winbox",
    "password", "web", "sniff", "sensitive", "api", "romon", "rest-api",
})


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
    """Answer `message` instead of running the next statement containing `match`.

    The message stops the rest of the command line, as a runtime error does, unless
    `continue_line` (then it is printed as if the statement had said it, and the line goes on).
    """

    message: str
    match: str = ""
    times: int = 1  # negative: forever
    continue_line: bool = False


def _builtin_profiles() -> list[Profile]:
    return [Profile("default", builtin=True, id="*0"),
            Profile("default-encryption", builtin=True, id="*FFFFFFFE")]


@dataclass
class RouterState:
    """One router: configuration, knobs, and records of what happened.

    Knobs:
        version: the RouterOS release; `6.x` implies `legacy_v6`. Rules that follow it:
            v7.10+ ISO dates in the export header (ROUTEROS.md, Export); v7.11+ writes a
            menu that timed out as `#error exporting "/ip/firewall/calea" (timeout)`, older
            releases as `#error exporting /ip firewall calea` (MikroTik manual,
            Configuration Management); v7.17+ prints `Saving system configuration` before
            `Configuration backup saved` (eworm-de/routeros-scripts#90 on 7.17.2,
            beeyev/Mikrotik-RouterOS-automatic-backup-and-update#80 on 7.22.2), and a
            failed save prints it from 7.16 on (beeyev #62, a capture on 7.16.1).
        permissions_denied: write commands answer `not enough permissions (9)`.
        legacy_v6: RouterOS 6 (v6 export header, passwords always shown, `show-sensitive`
            rejected with `expected end of command (line 1 column 9)`).
        policies: each user's policies (default: all). Without `write` a write command
            answers `not enough permissions (9)`; without `ftp` SFTP is refused; on v7
            without `sensitive`, `/export show-sensitive` leaves the secrets out as plain
            `/export` does (ROUTEROS.md, "show-sensitive"; MikroTik manual, User).
        flash: the device has a `flash` directory: files outside it live on a RAM disk,
            and `/system backup save name=x` writes `flash/x.backup` (MikroTik manual,
            File; netmiko's file transfer defaults to `file_system="flash"`).
        drop_during_export: send about half of the export, then drop the TCP connection.
        export_cut_at: close the channel cleanly (exit status 0) after about this many
            bytes of the export, at a line boundary; nothing after the cut is sent, not
            even what later statements of the line print (Oxidized #1966: `exit-status`
            and `channel_close` right after a truncated `/export`; #3867: cuts near
            128 KiB on high-latency links).
        export_timeouts: menus (`/ip/firewall/calea`) whose export times out; the export
            writes an `#error exporting` line for each and carries on (MikroTik manual,
            Configuration Management, since 7.11).
        export_interrupted_at: a menu (`/ip/socks`) after which the export stops with
            `#error exporting /ip socks` then `#interrupted` (a cut v6 export seen in the
            wild, ROUTEROS.md); the rest of the command line does not run.
        export_warnings: volatile comment lines the export carries, such as
            `# ... please restart the device in order to apply the new setting` (the
            lines Oxidized's RouterOS model strips).
        export_delay: seconds to wait before an export's output.
        command_delay: seconds to wait before running any exec command.
        backup_delay: seconds before `/system backup save` starts writing its file.
        backup_write_time: seconds the background write of a `.backup` takes: the file is
            listed at once and grows until complete (write-back caching on multi-core
            NAND devices delays flash writes by up to 40 s: MikroTik manual, File).
        backup_write_stalls: the background write stops half-way and never completes.
        backup_save_error: `/system backup save` fails with `Failed to save system
            configuration backup` followed by this reason (`invalid file name`, beeyev
            #62) and writes nothing.
        item_exists_wording: menus other than `/ppp secret` refuse a duplicate name with
            `failure: item with this name already exists`, as v7 menus do (beeyev #80 on
            7.22.2); `/ppp secret` keeps `failure: secret with the same name already
            exists` (v6 and v7).
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
    policies: dict[str, frozenset[str]] = field(default_factory=dict)  # user -> policies

    permissions_denied: bool = False
    legacy_v6: bool = False
    flash: bool = False
    drop_during_export: bool = False
    export_cut_at: int | None = None
    export_timeouts: list[str] = field(default_factory=list)
    export_interrupted_at: str | None = None
    export_warnings: list[str] = field(default_factory=list)
    export_delay: float = 0.0
    command_delay: float = 0.0
    backup_delay: float = 0.0
    backup_write_time: float = 0.0
    backup_write_stalls: bool = False
    backup_save_error: str | None = None
    item_exists_wording: bool = False
    sftp_denied: bool = False
    always_allow_password_login: bool = False
    injected: list[InjectedError] = field(default_factory=list)

    executed: list[str] = field(default_factory=list)  # statements that began running
    exec_commands: list[str] = field(default_factory=list)  # raw exec channel commands
    logins: list[str] = field(default_factory=list)  # login names as sent (`admin+ct`)
    log: list[str] = field(default_factory=list)  # `/log info ...` messages
    variables_read: list[str] = field(default_factory=list)  # `$name` references evaluated
    writes: list[str] = field(default_factory=list)  # write statements that ran, in order
    reboots: int = 0
    exports: int = 0
    backups_saved: int = 0

    started: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))

    _next_id: int = field(default=1, init=False, repr=False)
    _last_export: datetime | None = field(default=None, init=False, repr=False)
    _writers: set[Any] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.version:
            self.version = V6_VERSION if self.legacy_v6 else V7_VERSION
        elif self.version.startswith("6."):
            self.legacy_v6 = True

    def at_least(self, major: int, minor: int = 0) -> bool:
        """The router runs RouterOS `major.minor` or later (`7.17.2` >= 7.17)."""
        numbers = [int(n) for n in re.findall(r"\d+", self.version)[:2]] + [0, 0]
        return (numbers[0], numbers[1]) >= (major, minor)

    def has_policy(self, user: str, policy: str) -> bool:
        return policy in self.policies.get(user, FULL_POLICIES)

    def revoke(self, user: str, *policies: str) -> None:
        """Take policies away from `user` (the others stay)."""
        self.policies[user] = self.policies.get(user, FULL_POLICIES) - set(policies)

    @property
    def backup_dir(self) -> str:
        """Where `/system backup save` and `/export file=` write: `flash/` when present."""
        return "flash/" if self.flash else ""

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

    def fail_next(
        self, message: str = "failure: injected error", match: str = "", *,
        continue_line: bool = False,
    ) -> None:
        """The next statement (containing `match`, if given) prints `message` instead."""
        self.injected.append(InjectedError(message, match, continue_line=continue_line))

    def inject_error(self, message: str, match: str = "", times: int = -1) -> None:
        """Statements containing `match` print `message` (`times` times; negative: always)."""
        self.injected.append(InjectedError(message, match, times))

    def take_injected(self, statement: str) -> InjectedError | None:
        for injected in self.injected:
            if injected.match in statement:
                injected.times -= 1
                if injected.times == 0:
                    self.injected.remove(injected)
                return injected
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
