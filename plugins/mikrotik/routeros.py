"""RouterOS console language: quoting values, building commands, reading their output.

Quoting is a security matter on RouterOS: an unquoted ``;`` ends a statement, ``[`` opens a
command substitution, and inside ``"..."`` a ``$[...]`` still runs a command unless the
``$`` is escaped. So every value is always quoted, ``\\``, ``"``, ``$`` and ``?`` are
escaped, and anything outside printable ASCII is written as ``\\XX`` bytes (the console's
own escape), so a command line is one line of plain ASCII whatever a customer is called.

RouterOS reports errors as text on stdout with exit status 0; :func:`router_error` finds
them, and a command that should print nothing but prints something is an error too. The
plugin never matches English success or failure sentences to decide what to do next (the
wording varies between menus and releases): a conditional statement (:class:`Upsert`) or a
printed count (:class:`Count`) decides instead.

Statements are values with a ``label`` (menu and verb: safe to log) and a ``text`` (what
is sent: it may hold a password). :class:`Script` joins several with ``;`` so they run on
one exec channel, in order; a runtime error stops the rest of the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "$": "\\$", "?": "\\?"}
_PRINTABLE: Final = frozenset(chr(c) for c in range(0x20, 0x7F))
_ARG_NAME: Final = re.compile(r"^[a-z][a-z0-9-]*$")
_MENU: Final = re.compile(r"^/(?:[a-z][a-z0-9-]*(?: [a-z][a-z0-9-]*)*)?$")
_VERB: Final = re.compile(r"^[a-z][a-z0-9-]*$")

# Every error text RouterOS prints instead of running a statement (ROUTEROS.md), and a
# few more seen on real routers. Anchored at a line start: exports and tables never
# start a line with these words.
ERROR_LINE: Final = re.compile(
    r"^(?:failure: .*"
    r"|bad command name .*"
    r"|expected end of command.*"
    r"|expected command name.*"
    r"|syntax error.*"
    r"|input does not match any value of .*"
    r"|invalid value for argument .*"
    r"|invalid internal item number.*"
    r"|ambiguous value of .*"
    r"|missing value\(s\) of argument.*"
    r"|value of \S+ (?:out of range|too long).*"
    r"|no such item.*"
    r"|not enough permissions.*"
    r"|action timed out.*"
    r"|error: .*)$",
    re.MULTILINE,
)
PERMISSION: Final = "not enough permissions"
# `name=flash/x.backup` (v7) or `name="flash/x.backup"` (v6) in `print detail` output
_DETAIL_NAME: Final = re.compile(r'(?:^|\s)name=("(?:[^"\\]|\\.)*"|[^\s"]+)')
_ITEM_START: Final = re.compile(r"^\s*\d+\s")
_HEX_PAIR: Final = re.compile(r"[0-9A-F]{2}")


class Statement(Protocol):
    """Anything the session can send: its ``label`` is safe to show, its ``text`` is not."""

    @property
    def label(self) -> str: ...

    @property
    def text(self) -> str: ...


def quote(value: str) -> str:
    """``value`` as one double-quoted RouterOS string; nothing inside it is code.

    Control characters, non-ASCII and ``\\x7f`` become ``\\XX`` escapes of their UTF-8
    bytes; NUL is refused (RouterOS strings are C strings).
    """
    if "\x00" in value:
        raise ValueError("a RouterOS value cannot contain a NUL character")
    out: list[str] = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char in _PRINTABLE:
            out.append(char)
        else:
            out.extend(f"\\{byte:02X}" for byte in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


def has_control(value: str) -> bool:
    """True when ``value`` holds a control character (names must not: they get printed)."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


@dataclass(frozen=True, slots=True)
class Find:
    """``[find name="x"]``: the items an operation applies to (empty: a silent no-op).

    ``matching`` adds regular-expression conditions: ``[find where name~"x"]``.
    """

    conditions: Mapping[str, str] = field(default_factory=dict)
    matching: Mapping[str, str] = field(default_factory=dict)

    def render(self, menu: str | None = None) -> str:
        """``[find ...]``, or ``[/ppp secret find ...]`` with ``menu`` (valid anywhere)."""
        words = [f"{_arg(name)}={quote(value)}" for name, value in self.conditions.items()]
        if self.matching:
            words.append("where")
            words += [f"{_arg(name)}~{quote(value)}" for name, value in self.matching.items()]
        verb = f"{menu} find" if menu else "find"
        return f"[{' '.join([verb, *words])}]"


@dataclass(frozen=True, slots=True)
class Command:
    """One console statement, e.g. ``/ppp secret set [find name="a"] profile="p"``.

    ``menu`` is ``/ppp secret`` (or ``/`` for root commands such as ``/export``).

    ``menu`` and ``verb`` come from the plugin's code, never from data; ``args`` values
    are always quoted. ``sensitive`` names the arguments whose values must never be
    shown: :attr:`label` (menu and verb) is what logs and errors carry.
    """

    menu: str
    verb: str
    args: Mapping[str, str] = field(default_factory=dict)
    target: Find | None = None
    flags: tuple[str, ...] = ()
    where: Mapping[str, str] | None = None
    sensitive: frozenset[str] = frozenset({"password"})
    matching: Mapping[str, str] | None = None  # `where name~"x"`: regular expressions

    def __post_init__(self) -> None:
        if not _MENU.match(self.menu) or not _VERB.match(self.verb):
            raise ValueError(f"not a RouterOS menu/verb: {self.menu!r} {self.verb!r}")
        for name in (*self.args, *self.flags, *(self.where or {}), *(self.matching or {})):
            _arg(name)

    @property
    def label(self) -> str:
        """Menu and verb only: safe to log and to put in an error."""
        return f"/{self.verb}" if self.menu == "/" else f"{self.menu} {self.verb}"

    @property
    def text(self) -> str:
        """The command line sent to the router (contains secrets: never log it)."""
        words = [self.label]
        if self.target is not None:
            words.append(self.target.render())
        words += self.flags
        words += [f"{name}={quote(value)}" for name, value in self.args.items()]
        if self.where or self.matching:
            words.append("where")
            words += [f"{name}={quote(value)}" for name, value in (self.where or {}).items()]
            words += [f"{name}~{quote(value)}" for name, value in (self.matching or {}).items()]
        return " ".join(words)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.sensitive else v) for k, v in self.args.items()}
        return f"<Command {self.label} {shown}>"


@dataclass(frozen=True, slots=True)
class Upsert:
    """Add an item, or update it when one with that name exists, in one statement.

    ``:if ([:len [/ppp profile find name="p"]] = 0) do={/ppp profile add ...}
    else={/ppp profile set [/ppp profile find name="p"] ...}`` (ROUTEROS.md): idempotent
    whatever a menu's "already exists" sentence says, and nothing in between can race.
    """

    menu: str
    name: str
    values: Mapping[str, str]
    on_update: Mapping[str, str] = field(default_factory=dict)  # extra values for `set`

    @property
    def label(self) -> str:
        return f"{self.menu} add/set"

    @property
    def text(self) -> str:
        by_name = Find({"name": self.name})
        add = Command(self.menu, "add", {"name": self.name, **self.values})
        update = Command(self.menu, "set", {**self.values, **self.on_update}, target=by_name)
        condition = f"([:len {by_name.render(self.menu)}] = 0)"
        return f":if {condition} do={{{add.text}}} else={{{update.text}}}"

    def __repr__(self) -> str:
        return f"<Upsert {self.label} {self.name!r}>"


@dataclass(frozen=True, slots=True)
class Count:
    """``:put [:len [/ppp secret find name="x"]]``: prints how many items match."""

    menu: str
    find: Find

    @property
    def label(self) -> str:
        return f"{self.menu} find"

    @property
    def text(self) -> str:
        return f":put [:len {self.find.render(self.menu)}]"


@dataclass(frozen=True, slots=True)
class Put:
    """``:put "<value>"``: prints the value on a line of its own (a marker)."""

    value: str

    @property
    def label(self) -> str:
        return ":put"

    @property
    def text(self) -> str:
        return f":put {quote(self.value)}"


@dataclass(frozen=True, slots=True)
class Script:
    """Statements run in order on one exec channel (``a; b; c``).

    ``label`` is ``name`` when given (the statement that matters), else the first one's.
    """

    statements: tuple[Statement, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.statements[0].label

    @property
    def text(self) -> str:
        return "; ".join(statement.text for statement in self.statements)

    def __repr__(self) -> str:
        return f"<Script {[s.label for s in self.statements]}>"


def _arg(name: str) -> str:
    if not _ARG_NAME.match(name):
        raise ValueError(f"not a RouterOS argument name: {name!r}")
    return name


def lines(output: str) -> list[str]:
    """The output's lines without line ends (RouterOS prints ``\\r\\n``)."""
    return [line.rstrip("\r") for line in output.split("\n") if line.strip()]


def router_error(output: str) -> str | None:
    """The first error line RouterOS printed, or None."""
    found = ERROR_LINE.search(output.replace("\r\n", "\n"))
    return found.group(0).rstrip("\r") if found else None


def unexpected_output(output: str, allowed: Iterable[str] = ()) -> str | None:
    """For a command that prints nothing on success: the text it printed instead, if any."""
    rest = [line for line in lines(output) if line.strip() not in set(allowed)]
    return "\n".join(rest) if rest else None


def detail_names(output: str) -> list[str]:
    """The ``name`` of each item in ``print detail`` output, v6 (quoted) or v7 style.

    The MikroTik manual (File) shows items as `` 0 name=flash/x.backup type=backup
    size=1.2KiB ...`` (v7) or `` 1 name="sample.txt" type=".txt file" ...`` (v6); the
    name is on the item's first line.
    """
    names = []
    for line in lines(output):
        if not _ITEM_START.match(line):
            continue
        found = _DETAIL_NAME.search(line)
        if found is not None:
            names.append(unquote(found.group(1)))
    return names


def unquote(value: str) -> str:
    """A value as printed (bare, or ``"..."`` with ``\\"``, ``\\\\``, ``\\XX`` escapes)."""
    if not (len(value) >= 2 and value.startswith('"') and value.endswith('"')):
        return value
    body, out, i = value[1:-1], bytearray(), 0
    while i < len(body):
        pair = body[i + 1 : i + 3]
        if body[i] == "\\" and _HEX_PAIR.fullmatch(pair):
            out.append(int(pair, 16))
            i += 3
        elif body[i] == "\\" and i + 1 < len(body):
            out += body[i + 1].encode()
            i += 2
        else:
            out += body[i].encode()
            i += 1
    return out.decode("utf-8", errors="replace")
