"""The command tree the emulator knows: menus, commands, and the arguments each accepts.

Only the command forms a client of this framework uses are here; anything else is a
`bad command name`, as on a router without that package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .render import file_entries
from .state import RouterState

Path = tuple[str, ...]

SERVICES = frozenset({"any", "async", "l2tp", "ovpn", "pppoe", "pptp", "sstp"})


@dataclass(frozen=True)
class Table:
    """A menu whose items can be printed and found (and maybe added, set, removed)."""

    items: Callable[[RouterState], list[Any]]
    fields: tuple[str, ...]  # `print terse` order (after `comment`)
    writable: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("remove", "print", "find")
    noun: str = "item"


TABLES: dict[Path, Table] = {
    ("ppp", "profile"): Table(
        lambda s: s.profiles,
        ("name", "local-address", "remote-address", "rate-limit"),
        ("name", "rate-limit", "local-address", "remote-address", "comment"),
        ("add", "set", "remove", "print", "find"),
        "profile",
    ),
    ("ppp", "secret"): Table(
        lambda s: s.secrets,
        ("name", "service", "password", "profile", "remote-address"),
        ("name", "password", "service", "profile", "remote-address", "comment", "disabled"),
        ("add", "set", "remove", "disable", "enable", "print", "find"),
        "secret",
    ),
    ("ppp", "active"): Table(
        lambda s: s.active, ("name", "service", "caller-id", "address", "uptime")),
    ("file",): Table(file_entries, ("name", "type", "size")),
}


@dataclass(frozen=True)
class Spec:
    """What a command accepts. `unnamed`: how many positional values (an item, a message)."""

    args: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    unnamed: int = 0
    where: bool = False
    unset: bool = False
    write: bool = False
    control: bool = False  # runs other statements (`:if`): never replaced by an injected error


def _table_specs() -> dict[Path, Spec]:
    specs: dict[Path, Spec] = {}
    for menu, table in TABLES.items():
        filters = frozenset({"comment", *table.fields, *table.writable})
        by_verb = {
            "add": Spec(args=frozenset(table.writable), write=True),
            "set": Spec(args=frozenset(table.writable), unnamed=1, unset=True, write=True),
            "remove": Spec(unnamed=1, write=True),
            "disable": Spec(unnamed=1, write=True),
            "enable": Spec(unnamed=1, write=True),
            "print": Spec(flags=frozenset({"terse", "detail", "without-paging", "count-only"}),
                          where=True),
            "find": Spec(args=filters, where=True),
        }
        for verb in table.verbs:
            specs[(*menu, verb)] = by_verb[verb]
    return specs


COMMANDS: dict[Path, Spec] = {
    **_table_specs(),
    ("export",): Spec(args=frozenset({"file"})),  # flags depend on the version: see below
    ("system", "backup", "save"): Spec(
        args=frozenset({"name", "password", "dont-encrypt", "encryption"}), write=True),
    ("system", "identity", "print"): Spec(),
    ("system", "identity", "set"): Spec(args=frozenset({"name"}), write=True),
    ("system", "identity", "get"): Spec(unnamed=1),
    ("system", "reboot"): Spec(write=True),
    ("log", "info"): Spec(args=frozenset({"message"}), unnamed=1),
    ("log", "warning"): Spec(args=frozenset({"message"}), unnamed=1),
    ("log", "error"): Spec(args=frozenset({"message"}), unnamed=1),
    (":put",): Spec(unnamed=1),
    (":len",): Spec(unnamed=1),
    # `:if (<expression>) do={...} else={...}` (Manual:Scripting, "Conditional statement")
    (":if",): Spec(args=frozenset({"do", "else"}), unnamed=1, control=True),
}

EXPORT_FLAGS_V7 = frozenset({"show-sensitive", "terse", "verbose"})
EXPORT_FLAGS_V6 = frozenset({"hide-sensitive", "compact", "terse", "verbose"})

MENUS: frozenset[Path] = frozenset(path[:i] for path in COMMANDS for i in range(len(path)))


def spec_for(path: Path, state: RouterState) -> Spec:
    spec = COMMANDS[path]
    if path == ("export",):
        flags = EXPORT_FLAGS_V6 if state.legacy_v6 else EXPORT_FLAGS_V7
        return Spec(args=spec.args, flags=flags)
    return spec
