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
    """A row of `/file`, built from `RouterState.files` when needed (`size` in bytes)."""

    name: str
    type: str
    size: str
    id: str


def file_entries(state: RouterState) -> list[FileEntry]:
    """The `/file` rows: the `flash` disk first when the device has one, then the files.

    v7 lists `flash` as `type=disk`, v6 as `type="directory"` (MikroTik manual, File).
    """
    kinds = {".backup": "backup", ".rsc": "script", ".npk": "package"}
    disks = [FileEntry("flash", "directory" if state.legacy_v6 else "disk", "", "*0")]
    files = [
        FileEntry(name, next((k for s, k in kinds.items() if name.endswith(s)), "file"),
                  str(len(data)), f"*{i + 1:X}")
        for i, (name, data) in enumerate(state.files.items())
    ]
    return (disks if state.flash else []) + files


def human_size(size: int) -> str:
    """Sizes as `/file print` shows them: bytes, then `KiB`/`MiB` with one decimal."""
    if size < 1024:
        return str(size)
    if size < 1024 * 1024:
        return f"{size / 1024:.1f}KiB"
    return f"{size / (1024 * 1024):.1f}MiB"


def print_file_detail(items: Sequence[tuple[int, FileEntry]], state: RouterState) -> list[str]:
    """`/file print detail` as the MikroTik manual (File) shows it, one item per block.

    v7: ` 0 name=flash/x.backup type=backup size=1.2KiB last-modified=2026-11-24 10:00:00`;
    v6 quotes every string: ` 0 name="x.backup" type="backup" size=1234 creation-time=
    nov/24/2026 10:00:00`. Each item is followed by an empty line; sizes are rounded.
    """
    when = state.started
    lines = []
    for index, entry in items:
        if state.legacy_v6:
            stamp = f"{_MONTHS[when.month - 1]}/{when:%d/%Y %H:%M:%S}"
            pairs = [f'name="{entry.name}"', f'type="{entry.type}"']
            if entry.size:
                pairs.append(f"size={human_size(int(entry.size))}")
            pairs.append(f"creation-time={stamp}")
        else:
            pairs = [f"name={quote(entry.name)}", f"type={entry.type}"]
            if entry.size:
                pairs.append(f"size={human_size(int(entry.size))}")
            pairs.append(f"last-modified={when:%Y-%m-%d %H:%M:%S}")
        lines += [f"{index:>2} " + " ".join(pairs), ""]
    return lines


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
    """`# 2024-10-25 12:09:43 by RouterOS 7.15.2`; `# oct/17/2024 ...` before 7.10."""
    when = state.export_time()
    if not state.at_least(7, 10):
        stamp = f"{_MONTHS[when.month - 1]}/{when:%d/%Y %H:%M:%S}"
    else:
        stamp = f"{when:%Y-%m-%d %H:%M:%S}"
    return f"# {stamp} by RouterOS {state.version}"


def menu_error(state: RouterState, menu: str, reason: str | None) -> str:
    """The line an export writes for a menu it could not export.

    `#error exporting "/ip/firewall/calea" (timeout)` since 7.11 (MikroTik manual,
    Configuration Management), `#error exporting /ip firewall calea` before.
    """
    if state.at_least(7, 11):
        return f'#error exporting "{menu}"' + (f" ({reason})" if reason else "")
    return "#error exporting /" + " ".join(menu.strip("/").split("/"))


def export(state: RouterState, *, show_sensitive: bool) -> tuple[list[str], bool]:
    """The `/export` text (one string per line), header first; True when interrupted.

    Menus in `state.export_timeouts` are written as `#error exporting` lines in their
    place and the export carries on; `state.export_interrupted_at` stops it there with
    `#interrupted`.
    """
    sections = export_sections(state, show_sensitive=show_sensitive)
    for menu in state.export_timeouts:
        sections.append((menu, [menu_error(state, menu, "timeout")]))
    interrupted = state.export_interrupted_at
    if interrupted is not None:
        sections.append((interrupted, [menu_error(state, interrupted, None), "#interrupted"]))
    sections.sort(key=lambda section: section[0])
    lines = [header(state), *preamble(state), *state.export_warnings]
    for menu, body in sections:
        lines += body
        if menu == interrupted:
            return lines, True
    return lines, False


def preamble(state: RouterState) -> list[str]:
    return [
        f"# software id = {state.software_id}",
        "#",
        f"# model = {state.model}",
        f"# serial number = {state.serial_number}",
    ]


def export_body(state: RouterState, *, show_sensitive: bool) -> list[str]:
    """The export after its first (time-stamped) line, without faults or warnings."""
    lines = preamble(state)
    for _, body in sorted(export_sections(state, show_sensitive=show_sensitive)):
        lines += body
    return lines


def export_sections(state: RouterState, *, show_sensitive: bool) -> list[tuple[str, list[str]]]:
    """(menu path, lines) of each configured menu, e.g. (`/ppp/secret`, [...])."""
    show_password = show_sensitive or state.legacy_v6
    sections: list[tuple[str, list[str]]] = []
    profile_lines = []
    for profile in state.profiles:
        args = _profile_args(profile)
        if profile.builtin and args:
            profile_lines += _command(f"set {profile.id}", args)
        elif not profile.builtin:
            profile_lines += _command("add", args)
    if profile_lines:
        sections.append(("/ppp/profile", ["/ppp profile", *profile_lines]))
    if state.secrets:
        secret_lines = ["/ppp secret"]
        for secret in state.secrets:
            secret_lines += _command("add", _secret_args(secret, show_password=show_password))
        sections.append(("/ppp/secret", secret_lines))
    if state.identity != "MikroTik":
        sections.append(("/system/identity", ["/system identity",
                                              f"set name={quote(state.identity)}"]))
    return sections


def backup_bytes(state: RouterState, password: str | None, encryption: str) -> bytes:
    """A `.backup` file: the little-endian u32 magic, the u32 total file length, a body.

    The length field at offset 4 is there for plain and encrypted files alike
    (ROUTEROS.md, Export and backup). The body is not RouterOS's real format; it is
    opaque, deterministic for one config and password, and differs when either changes.
    """
    body = "\n".join(export_body(state, show_sensitive=True)).encode()
    if password is None:
        return struct.pack("<II", MAGIC_PLAIN, 8 + len(body)) + body
    magic = MAGIC_RC4 if encryption == "rc4" else MAGIC_AES
    salt = hashlib.sha256(b"salt" + body).digest()[:16]
    stream = bytearray()
    counter = 0
    while len(stream) < len(body):
        stream += hashlib.sha256(salt + password.encode() + counter.to_bytes(8, "big")).digest()
        counter += 1
    sealed = bytes(a ^ b for a, b in zip(body, stream, strict=False))
    return struct.pack("<II", magic, 8 + len(salt) + len(sealed)) + salt + sealed
