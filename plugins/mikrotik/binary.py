"""The binary ``.backup``: saved, found by its unique name, read when complete, removed.

What real routers do (ROUTEROS.md), and what is done about it:

- ``/system backup save`` prints ``Configuration backup saved``, from 7.17 on after
  ``Saving system configuration``; a failure prints ``Failed to save system configuration
  backup`` and a reason such as ``invalid file name``. Both success forms are accepted;
  anything else is the router's refusal, its text in ``router_message``;
- on devices with a ``flash`` directory the file is ``flash/<name>.backup``: the name is
  unique per call (``isp-<device>-<time>-<random>``), so after the save the file is found
  with ``/file print detail where name~"<name>"`` (same channel as the save, polled if
  not listed yet) and then read and removed by the name the router reports;
- the file is written in the background (NAND write-back can delay it by up to 40 s): it
  is read only once its size was the same on two reads and equals the total length in
  its header (u32 little-endian at offset 4, plain and encrypted files alike), within
  ``backup_file_wait`` cut to the hook's budget;
- leftover backups fill the flash: the file is removed (and checked gone) after a good
  fetch, and after any failure every file carrying the name is removed, best effort.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
from datetime import UTC, datetime
from typing import Any, Final

from .errors import BackupInvalid, MikrotikError
from .routeros import Command, Count, Find, Put, Script, detail_names, lines, router_error
from .settings import MikrotikSettings, backup_password
from .ssh import RouterSession

log = logging.getLogger(__name__)

MAGIC_PLAIN: Final = 0xB1A1AC88
MAGIC_AES: Final = 0x7391A8EF
MAGIC_RC4: Final = 0x7291A8EF
HEADER_SIZE: Final = 8  # magic, total length: two little-endian u32
SAVING: Final = "Saving system configuration"  # 7.17+, before SAVED
SAVED: Final = "Configuration backup saved"
MAX_BACKUP_SIZE: Final = 256 * 1024 * 1024
SAVED_MARKER: Final = "isp-backup-saved"

Artifact = dict[str, Any]


def backup_name(device_id: int) -> str:
    """Unique per call: the token the file is found by, so backups never collide."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"isp-{device_id}-{stamp}-{secrets.token_hex(4)}"


async def take(router: RouterSession, settings: MikrotikSettings) -> Artifact:
    """Save, find, read when complete, check, remove: the ``.backup`` as an artifact."""
    device_id = router.target.device_id
    name = backup_name(device_id)
    if settings.backup_key is not None:
        args = {"name": name, "password": backup_password(settings.backup_key, device_id)}
        expected = {MAGIC_AES: "AES", MAGIC_RC4: "RC4"}
    else:
        args = {"name": name, "dont-encrypt": "yes"}
        expected = {MAGIC_PLAIN: "unencrypted"}
    try:
        listed = await save(router, Command("/system backup", "save", args), name)
        wait = Wait(router.budget.limit(settings.backup_file_wait))
        path = await find_file(router, name, listed, wait)
        data = await read_complete(router, path, expected, wait)
    except BaseException:
        await remove_quietly(router, name)
        raise
    await remove(router, path)
    return {"kind": "binary", "data": data, "sha256": hashlib.sha256(data).hexdigest()}


class Wait:
    """One deadline for finding the file and for its background write to complete."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + seconds
        self._delay = 0.02

    def over(self) -> bool:
        return self._loop.time() >= self._deadline

    async def pause(self) -> None:
        """Back off (20 ms doubling to 0.5 s), never past the deadline."""
        await asyncio.sleep(max(0.0, min(self._delay, self._deadline - self._loop.time())))
        self._delay = min(self._delay * 2, 0.5)


def listing(name: str) -> Command:
    return Command("/file", "print", flags=("detail",), matching={"name": name})


async def save(router: RouterSession, command: Command, name: str) -> list[str]:
    """Run the save, then list the files carrying ``name`` on the same channel.

    Returns the names listed (maybe none yet: the file is written in the background).
    """
    script = Script((command, Put(SAVED_MARKER), listing(name)), command.label)
    text = (await router.output(script)).decode("utf-8", errors="replace")
    said, marker, rest = text.partition(SAVED_MARKER + "\r\n")
    words = [line.strip() for line in lines(said)]
    unexpected = [line for line in words if line not in (SAVING, SAVED)]
    if not marker or unexpected or SAVED not in words:
        # a failed save stops the line: `Failed to save system configuration backup`,
        # `invalid file name`, or any error text
        message = router_error(said) or "\n".join(unexpected) or f"no '{SAVED}' in the answer"
        raise router.command_error(command, message)
    return detail_names(rest)


async def find_file(router: RouterSession, name: str, listed: list[str], wait: Wait) -> str:
    """The path the router reports for ``<name>.backup`` (``flash/...`` or the root)."""
    while True:
        found = [n for n in listed if n.rsplit("/", 1)[-1] == f"{name}.backup"]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise BackupInvalid(
                f"router {router.target.host}: several files are named {name}.backup "
                f"({', '.join(found)}); none was fetched",
                **router.target.where,
            )
        if wait.over():
            raise BackupInvalid(
                f"router {router.target.host}: {name}.backup was not listed by /file within "
                f"{wait.seconds:g} s after '{SAVED}'; nothing was stored",
                **router.target.where,
            )
        await wait.pause()
        listed = detail_names(await router.run(listing(name), quiet=False))


def header_length(data: bytes) -> int | None:
    """The total length a ``.backup`` header declares (u32 LE at offset 4)."""
    return struct.unpack_from("<I", data, 4)[0] if len(data) >= HEADER_SIZE else None


async def read_complete(
    router: RouterSession, path: str, expected: dict[int, str], wait: Wait
) -> bytes:
    """The file once its size held across two reads and equals its header's length."""
    previous: int | None = None
    read_at: int | None = None
    total: int | None = None
    while True:
        size = await router.file_size(path)
        if size is not None and size > MAX_BACKUP_SIZE:
            raise _invalid(router, f"{path} is {size} bytes, more than any RouterOS backup")
        stable = previous is None or previous == size
        if size is not None and size >= HEADER_SIZE and stable and size != read_at:
            data = await router.read_file(path)
            read_at = size
            check_magic(router, path, data, expected)
            total = header_length(data)
            if total == len(data) == size:
                return data
            if total is not None and total < len(data):
                raise _invalid(router, f"{path} has {len(data)} bytes but its header says {total}")
        previous = size
        if wait.over():
            written = f"{size or 0} of {total} bytes" if total else f"{size or 0} bytes"
            raise _invalid(
                router,
                f"{path} was not complete within {wait.seconds:g} s ({written} written; "
                "RouterOS writes backups in the background: raise backup_file_wait for "
                "slow flash)",
            )
        await wait.pause()


def check_magic(router: RouterSession, path: str, data: bytes, expected: dict[int, str]) -> None:
    magic = struct.unpack("<I", data[:4])[0] if len(data) >= 4 else None
    if magic not in expected:
        found = f"0x{magic:08X}" if magic is not None else f"{len(data)} bytes"
        raise _invalid(
            router,
            f"{path} is not a {'/'.join(expected.values())} RouterOS backup (magic {found})",
        )


def _invalid(router: RouterSession, why: str) -> BackupInvalid:
    return BackupInvalid(
        f"router {router.target.host}: {why}; nothing was stored", **router.target.where
    )


async def remove(router: RouterSession, path: str) -> None:
    """Remove the backup and check it is gone (an empty find would be a silent no-op)."""
    by_name = Find({"name": path})
    script = Script(
        (Command("/file", "remove", target=by_name), Count("/file", by_name)), "/file remove"
    )
    left = (await router.run(script, quiet=False)).strip()
    if left != "0":
        raise router.command_error(script, f"{path} is still on the router ({left!r} left)")


async def remove_quietly(router: RouterSession, name: str) -> None:
    """After a failure (or a cancelled hook): remove any file carrying ``name``.

    Best effort within the budget's cleanup share: the original error matters.
    """
    command = Command("/file", "remove", target=Find(matching={"name": name}))
    try:
        await router.run(command, limit=router.budget.cleanup, budgeted=False)
    except MikrotikError as exc:
        log.warning(
            "could not remove %s from the router: %s",
            name,
            exc.detail,
            extra=router.target.where,
        )
