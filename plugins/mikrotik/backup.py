"""Router backups: the ``/export`` text and the binary ``.backup`` file.

The pains users of other tools report are the design brief here: a router's error text
saved as a "backup", exports silently cut short, secrets missing from v7 exports,
``.backup`` files left to fill the flash. So an export is only accepted when it starts
with RouterOS's header, holds no error line and ends on a complete line on a channel that
closed normally; a binary backup only when its magic number says it is one, sealed as
asked; and the ``.backup`` file is removed from the router whatever happens.

The export's ``sha256`` is taken over the text without its volatile lines (the time
stamp header, status comments such as ``# poe-out status: ...``), so an unchanged router
gives the same digest and the core records ``changed: false``; the text stored is the
full original.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import struct
from datetime import UTC, datetime
from typing import Any, Final

from .errors import BackupInvalid, MikrotikError
from .routeros import Command, Find, lines, router_error
from .settings import MikrotikSettings, backup_password
from .ssh import RouterSession

log = logging.getLogger(__name__)

MAGIC_PLAIN: Final = 0xB1A1AC88
MAGIC_AES: Final = 0x7391A8EF
MAGIC_RC4: Final = 0x7291A8EF
SAVED: Final = "Configuration backup saved"
CLEANUP_LIMIT: Final = 5.0
MAX_BACKUP_SIZE: Final = 256 * 1024 * 1024

HEADER: Final = re.compile(
    r"^# (?:\d{4}-\d{2}-\d{2}|[a-z]{3}/\d{2}/\d{4}) \d{2}:\d{2}:\d{2} by RouterOS \S+"
)
# Comments RouterOS adds to an export that change without any configuration change
# (the list Oxidized's RouterOS model strips, which comes from years of real routers).
VOLATILE: Final = re.compile(
    r"^\s*# (?:poe-out status: .*|inactive time|received packet from \S+ bad format"
    r"|Firmware upgraded successfully.*|\S+ not ready|Interface not running)\s*$"
)
# v6 does not know ``show-sensitive`` (and shows secrets anyway).
UNKNOWN_FLAG: Final = "expected end of command"

Artifact = dict[str, Any]


def stable_text(text: str) -> str:
    """The export without its volatile lines, line ends normalised to ``\\n``."""
    kept = text.replace("\r\n", "\n").split("\n")
    if kept and HEADER.match(kept[0]):
        kept = kept[1:]
    return "\n".join(line for line in kept if not VOLATILE.match(line))


def export_digest(text: str) -> str:
    return hashlib.sha256(stable_text(text).encode("utf-8", errors="surrogateescape")).hexdigest()


def check_export(raw: bytes, router: RouterSession, command: Command) -> str:
    """The export's text, or an error saying why this output is not an export."""
    text = raw.decode("utf-8", errors="replace")
    first = text.split("\n", 1)[0].rstrip("\r")
    message = router_error(text)
    if message is not None:
        raise router.command_error(command, message)
    where = router.target.where
    if not HEADER.match(first):
        shown = first[:120] or "(no output)"
        raise BackupInvalid(
            f"router {router.target.host}: '{command.label}' did not print an export (first "
            f"line {shown!r}); nothing was stored",
            command=command.label,
            **where,
        )
    body = lines(text)
    if not text.endswith("\n") or body[-1].endswith("\\"):
        raise BackupInvalid(
            f"router {router.target.host}: the export ends mid-line after {len(raw)} bytes "
            "(truncated); nothing was stored",
            command=command.label,
            **where,
        )
    return text


async def export(router: RouterSession, settings: MikrotikSettings) -> Artifact:
    """``/export`` (``show-sensitive`` when configured) as a checked artifact."""
    flags = ("show-sensitive",) if settings.export_show_sensitive else ()
    command = Command("/", "export", flags=flags)
    raw = await router.output(command, limit=settings.export_timeout)
    first = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if flags and first.startswith(UNKNOWN_FLAG):
        log.info("show-sensitive rejected (RouterOS 6): plain /export", extra=router.target.where)
        command = Command("/", "export")
        raw = await router.output(command, limit=settings.export_timeout)
    text = check_export(raw, router, command)
    artifact: Artifact = {"kind": "export", "data": raw, "sha256": export_digest(text)}
    if settings.export_retention is not None:
        # the core keeps every changed export and this many unchanged ones
        artifact["keep_unchanged"] = settings.export_retention
    return artifact


def backup_name(device_id: int) -> str:
    """Unique per call, so concurrent or leftover backups never collide."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"isp-{device_id}-{stamp}-{secrets.token_hex(4)}"


async def binary(router: RouterSession, settings: MikrotikSettings) -> Artifact:
    """``/system backup save``, fetch the file over SFTP, check it, remove it."""
    device_id = router.target.device_id
    name = backup_name(device_id)
    filename = f"{name}.backup"
    if settings.backup_key is not None:
        args = {"name": name, "password": backup_password(settings.backup_key, device_id)}
        expected = {MAGIC_AES: "AES", MAGIC_RC4: "RC4"}
    else:
        args = {"name": name, "dont-encrypt": "yes"}
        expected = {MAGIC_PLAIN: "unencrypted"}
    save = Command("/system backup", "save", args)
    try:
        await router.run(save, allowed=(SAVED,))
        # RouterOS writes the file in the background after printing SAVED.
        data = await _fetch(router, filename, settings.backup_file_wait)
        _check_magic(router, filename, data, expected)
    except BaseException:
        await _remove_quietly(router, filename)
        raise
    await _remove(router, filename)
    return {"kind": "binary", "data": data, "sha256": hashlib.sha256(data).hexdigest()}


async def back_up(router: RouterSession, settings: MikrotikSettings) -> list[Artifact]:
    """Every artifact of one router, over one connection: export, then binary."""
    artifacts = [await export(router, settings)]
    if settings.binary_backup:
        artifacts.append(await binary(router, settings))
    return artifacts


async def _fetch(router: RouterSession, filename: str, wait: float) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.02
    while (size := await router.file_size(filename)) is None or size == 0:
        if loop.time() >= deadline:
            raise BackupInvalid(
                f"router {router.target.host}: {filename} did not appear within {wait:g} s "
                "after 'Configuration backup saved'",
                **router.target.where,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    if size > MAX_BACKUP_SIZE:
        raise BackupInvalid(
            f"router {router.target.host}: {filename} is {size} bytes, more than any "
            f"RouterOS backup ({MAX_BACKUP_SIZE} allowed); not fetched",
            **router.target.where,
        )
    return await router.read_file(filename)


def _check_magic(
    router: RouterSession, filename: str, data: bytes, expected: dict[int, str]
) -> None:
    magic = struct.unpack("<I", data[:4])[0] if len(data) >= 4 else None
    if magic not in expected:
        found = f"0x{magic:08X}" if magic is not None else f"{len(data)} bytes"
        raise BackupInvalid(
            f"router {router.target.host}: {filename} is not a {'/'.join(expected.values())} "
            f"RouterOS backup (magic {found}); nothing was stored",
            **router.target.where,
        )


def _remove_command(filename: str) -> Command:
    return Command("/file", "remove", target=Find({"name": filename}))


async def _remove(router: RouterSession, filename: str) -> None:
    """Remove the backup from the flash; failing to is a failed backup (flash fills up)."""
    await router.run(_remove_command(filename))


async def _remove_quietly(router: RouterSession, filename: str) -> None:
    """Best effort after a failure (or a cancelled hook): the original error matters.

    Bounded by ``CLEANUP_LIMIT``: a hook that timed out must not linger long.
    """
    limit = min(CLEANUP_LIMIT, router.settings.command_timeout)
    try:
        await router.run(_remove_command(filename), limit=limit)
    except MikrotikError as exc:
        log.warning(
            "could not remove %s from the router: %s",
            filename,
            exc.detail,
            extra=router.target.where,
        )
