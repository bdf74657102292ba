"""What the router prints: `print terse`, v6/v7 tables, `/export`, and backup file bytes."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .state import Profile, RouterState, Secret
from .syntax import quote

MAGIC_PLAIN = 0xB1A1AC88
MAGIC_AES = 0x7391A8EF
MAGIC_RC4 = 0x7291A8EF
_WRAP = 80
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


@dataclass
class FileEntry:
    """A row of `/file`, built from `RouterState.files` when needed."""

    name: str
    type: str
    size: str
    id: str


def file_entries(state: RouterState) -> list[FileEntry]:
    kinds = {".backup": "backup", ".rsc": "script", ".npk": "package"}
    return [
        FileEntry(name, next((k for s, k in kinds.items() if name.endswith(s)), "file"),
                  str(len(data)), f"*{i + 1:X}")
        for i, (name, data) in enumerate(state.files.items())
    ]


def field_value(item: Any, name: str) -> str:
    """A RouterOS property (`remote-address`) of an item, as text (`yes`/`no` for flags)."""
    value = getattr(item, name.replace("-", "_"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def flags(item: Any) -> str:
    if getattr(item, "disabled", False):
        return "X"
    if getattr(item, "builtin", False):
        return "*"
    return " "


def print_terse(items: Sequence[tuple[int, Any]], fields: Sequence[str]) -> list[str]:
    """One line per (number, item): ` 0 X name=... service=...`; empty properties left out."""
    lines = []
    for index, item in items:
        pairs = [f"{name}={quote(field_value(item, name))}"
                 for name in ("comment", *fields)
                 if hasattr(item, name.replace("-", "_")) and field_value(item, name)]
        lines.append(f"{index:>2} {flags(item)} " + " ".join(pairs))
    return lines


def print_table(numbered: Sequence[tuple[int, Any]], columns: Sequence[str], *,
                v6: bool) -> list[str]:
    """The human table: v7 starts with `Flags:` and `Columns:`, v6 with lowercase flags."""
    items = [item for _, item in numbered]
    rows = [[field_value(item, c) for c in columns] for item in items]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    legend = [f for f in ("X", "*") if any(flags(item) == f for item in items)]
    names = {"X": "disabled", "*": "default"}
    lines = []
    if legend:
        text = "; ".join(f"{f} - {names[f] if v6 else names[f].upper()}" for f in legend)
        lines.append(f"Flags: {text}")
    if not v6:
        lines.append("Columns: " + ", ".join(c.upper() for c in columns))
    head = " #   " if v6 else "#   "
    lines.append(head + "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
                 .rstrip())
    for (index, item), row in zip(numbered, rows, strict=True):
        number = f"{index:>2} " if v6 else f"{index:<2}"
        cells = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        lines.append(f"{number}{flags(item)} {cells}".rstrip())
    return lines


def _command(verb: str, args: Sequence[tuple[str, str]]) -> list[str]:
    """`add a=b c=d` wrapped like RouterOS: ` \\` at the end, four spaces before the rest."""
    lines: list[str] = []
    current = verb
    for name, value in args:
        token = f"{name}={quote(value)}"
        if len(current) + 1 + len(token) + 2 > _WRAP and current.strip() != verb:
            lines.append(current + " \\")
            current = "    " + token
        else:
            current += " " + token
    return [*lines, current]


def _profile_args(profile: Profile) -> list[tuple[str, str]]:
    names: tuple[str, ...] = ("comment", "local-address", "name", "rate-limit", "remote-address")
    if profile.builtin:
        names = names[:2] + names[3:]
    return [(n, field_value(profile, n)) for n in names if field_value(profile, n)]


def _secret_args(secret: Secret, *, show_password: bool) -> list[tuple[str, str]]:
    args = []
    for name in ("comment", "disabled", "name", "password", "profile", "remote-address",
                 "service"):
        value = field_value(secret, name)
        default = {"disabled": "no", "profile": "default", "service": "any"}.get(name, "")
        if value != default and (name != "password" or show_password):
            args.append((name, value))
    return args


def header(state: RouterState) -> str:
    when = state.export_time()
    if state.legacy_v6:
        stamp = f"{_MONTHS[when.month - 1]}/{when:%d/%Y %H:%M:%S}"
    else:
        stamp = f"{when:%Y-%m-%d %H:%M:%S}"
    return f"# {stamp} by RouterOS {state.version}"


def export(state: RouterState, *, show_sensitive: bool) -> list[str]:
    """The `/export` text (one string per line), header first."""
    return [header(state), *export_body(state, show_sensitive=show_sensitive)]


def export_body(state: RouterState, *, show_sensitive: bool) -> list[str]:
    """The export after its first (time-stamped) line."""
    show_password = show_sensitive or state.legacy_v6
    lines = [
        f"# software id = {state.software_id}",
        "#",
        f"# model = {state.model}",
        f"# serial number = {state.serial_number}",
    ]
    profile_lines = []
    for profile in state.profiles:
        args = _profile_args(profile)
        if profile.builtin and args:
            profile_lines += _command(f"set {profile.id}", args)
        elif not profile.builtin:
            profile_lines += _command("add", args)
    if profile_lines:
        lines += ["/ppp profile", *profile_lines]
    if state.secrets:
        lines.append("/ppp secret")
        for secret in state.secrets:
            lines += _command("add", _secret_args(secret, show_password=show_password))
    if state.identity != "MikroTik":
        lines += ["/system identity", f"set name={quote(state.identity)}"]
    return lines


def backup_bytes(state: RouterState, password: str | None, encryption: str) -> bytes:
    """A `.backup` file: little-endian magic, then bytes derived from the configuration.

    The body is not RouterOS's real format; it is opaque, deterministic for one config and
    password, and differs when either changes.
    """
    body = "\n".join(export_body(state, show_sensitive=True)).encode()
    if password is None:
        return struct.pack("<II", MAGIC_PLAIN, len(body)) + body
    magic = MAGIC_RC4 if encryption == "rc4" else MAGIC_AES
    salt = hashlib.sha256(b"salt" + body).digest()[:16]
    stream = bytearray()
    counter = 0
    while len(stream) < len(body):
        stream += hashlib.sha256(salt + password.encode() + counter.to_bytes(8, "big")).digest()
        counter += 1
    sealed = bytes(a ^ b for a, b in zip(body, stream, strict=False))
    return struct.pack("<I", magic) + salt + sealed
