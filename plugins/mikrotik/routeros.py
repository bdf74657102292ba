"""RouterOS console language: quoting values, building commands, reading their output.

Quoting is a security matter on RouterOS: an unquoted ``;`` ends a statement, ``[`` opens a
command substitution, and inside ``"..."`` a ``$[...]`` still runs a command unless the
``$`` is escaped. So every value is always quoted, ``\\``, ``"``, ``$`` and ``?`` are
escaped, and anything outside printable ASCII is written as ``\\XX`` bytes (the console's
own escape), so a command line is one line of plain ASCII whatever a customer is called.

RouterOS reports errors as text on stdout with exit status 0; :func:`router_error` finds
them, and a command that should print nothing but prints something is an error too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

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
ALREADY_EXISTS: Final = re.compile(r"^failure: .* with the same name already exists$")


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
    """``[find name="x"]``: the items an operation applies to (empty: a silent no-op)."""

    conditions: Mapping[str, str]

    def render(self) -> str:
        parts = " ".join(f"{_arg(name)}={quote(value)}" for name, value in self.conditions.items())
        return f"[find {parts}]"


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

    def __post_init__(self) -> None:
        if not _MENU.match(self.menu) or not _VERB.match(self.verb):
            raise ValueError(f"not a RouterOS menu/verb: {self.menu!r} {self.verb!r}")
        for name in (*self.args, *self.flags, *(self.where or {})):
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
        if self.where:
            words.append("where")
            words += [f"{name}={quote(value)}" for name, value in self.where.items()]
        return " ".join(words)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.sensitive else v) for k, v in self.args.items()}
        return f"<Command {self.label} {shown}>"


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


def is_already_exists(message: str) -> bool:
    return bool(ALREADY_EXISTS.match(message))


def unexpected_output(output: str, allowed: Iterable[str] = ()) -> str | None:
    """For a command that prints nothing on success: the text it printed instead, if any."""
    rest = [line for line in lines(output) if line.strip() not in set(allowed)]
    return "\n".join(rest) if rest else None
