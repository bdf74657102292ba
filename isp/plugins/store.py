"""Plugin zips as objects and folders: store them, extract them atomically.

The part of installing a plugin that touches the disk and the object store (zips are
checked first by :mod:`isp.plugins.archive`):

1. :func:`upload` keeps the zip in the object store under ``<name>/<version>/<sha256>.zip``
   so every instance installs the same bytes; :func:`download` checks them again.
2. :func:`stage` writes the files into ``plugins_dir/.staging-<random>/<name>`` (the loader
   skips dot folders); :func:`promote` swaps it into ``plugins_dir/<name>`` by two renames
   on one filesystem and returns the previous folder, which the caller restores with
   :func:`rollback` or deletes with :func:`discard` once the new version is recorded.
3. :func:`write_marker` notes in the folder which tree was extracted there.

Each ``*_async`` twin runs its function in a worker thread. OS errors become
``isp.errors`` here; :class:`ChecksumMismatch` (a ``StorageError``, 502) is this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Final

from isp.errors import ISPError, StorageError
from isp.plugins.archive import (
    INSTALLED_MARKER,
    PluginArchive,
    bad_entry,
    in_thread,
    invalid,
    is_ignored,
    name_problem,
    os_errors,
)
from isp.plugins.manifest import check_slug
from isp.storage import ObjectStore, StoredObject, fsync_dir

STAGING_PREFIX: Final = ".staging-"
_SAFE_VERSION: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_KEY: Final = re.compile(r"[^/]+/[^/]+/(?P<sha256>[0-9a-f]{64})\.zip")


class ChecksumMismatch(StorageError):
    """Stored bytes do not hash to the SHA-256 they were stored under."""

    status = 502
    title = "Checksum mismatch"
    type_slug = "checksum-mismatch"


# --- extraction ----------------------------------------------------------------------


def _check_name(name: str) -> str:
    """The manifest's plugin-name rule, before a name becomes a folder or an object key."""
    try:
        return check_slug(name, "plugin name")
    except ValueError as exc:
        raise invalid(["name"], str(exc)) from None


def _aside(plugins_dir: Path, purpose: str, name: str) -> Path:
    return plugins_dir / f".{purpose}-{name}-{secrets.token_hex(4)}"


def _exists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _remove(path: Path) -> None:
    """Delete a file or folder; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _write_file(root: Path, rel: str, content: bytes) -> None:
    """Create ``root/rel`` (0o644) and its folders (0o755), never through a link."""
    if (why := name_problem(rel)) is not None:  # validated already: defence in depth
        raise bad_entry(rel, why)
    *folders, filename = rel.split("/")
    parent = root
    for folder in folders:
        parent = parent / folder
        try:
            os.mkdir(parent, 0o755)
            os.chmod(parent, 0o755)  # whatever the umask
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(parent).st_mode):
                raise ISPError(f"refusing to extract {rel!r}: {folder!r} is not a folder") from None
    if not parent.resolve(strict=True).is_relative_to(root):
        raise ISPError(f"refusing to extract {rel!r}: it resolves outside the staging folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(parent / filename, flags, 0o644), "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fchmod(fh.fileno(), 0o644)
        os.fsync(fh.fileno())


def stage(archive: PluginArchive, plugins_dir: Path, name: str = "plugin") -> Path:
    """Write the plugin's files into a new ``plugins_dir/.staging-*/<name>`` folder.

    The folder is named after the plugin (what the loader expects) inside a dot folder
    (which discovery skips). On any failure it is deleted: ``plugins_dir`` is left as it
    was.
    """
    _check_name(name)
    with os_errors("create a staging folder in", plugins_dir):
        plugins_dir.mkdir(parents=True, exist_ok=True)
        parent = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=plugins_dir))
    staged = parent / name
    try:
        with os_errors("write plugin files to", staged):
            os.mkdir(staged, 0o755)
            os.chmod(staged, 0o755)
            root = staged.resolve(strict=True)
            for rel, content in archive.files.items():
                if not is_ignored(rel):
                    _write_file(root, rel, content)
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    return staged


def backup_path(plugins_dir: Path, name: str) -> Path:
    """Where :func:`promote` moves the folder it replaces (chosen first, for the journal)."""
    return _aside(plugins_dir, "old", name)


def promote(staged: Path, plugins_dir: Path, name: str, backup: Path | None = None) -> Path | None:
    """Move ``staged`` to ``plugins_dir/<name>``; return where the previous folder went.

    Two renames on one filesystem: the current folder (if any) to ``backup``
    (``.old-<name>-*``), then the staged one into place, so ``<name>`` is missing only
    between the two. Returns None when there was no previous folder.
    """
    target = plugins_dir / _check_name(name)
    if staged.parent.parent.resolve() != plugins_dir.resolve():
        raise ISPError(f"staged folder {str(staged)!r} is not staged in {str(plugins_dir)!r}")
    moved = None
    with os_errors("install the plugin folder", target):
        if _exists(target):
            moved = backup or backup_path(plugins_dir, name)
            os.rename(target, moved)
        try:
            os.rename(staged, target)
        except OSError:
            if moved is not None:
                os.rename(moved, target)
            raise
        fsync_dir(plugins_dir)
        with contextlib.suppress(OSError):
            staged.parent.rmdir()
    return moved


def rollback(backup: Path | None, plugins_dir: Path, name: str) -> None:
    """Undo :func:`promote`: ``backup`` becomes ``<name>`` again (no backup: ``<name>`` goes)."""
    target = plugins_dir / _check_name(name)
    with os_errors("restore the previous plugin folder", target):
        failed = None
        if _exists(target):
            failed = _aside(plugins_dir, "failed", name)
            os.rename(target, failed)
        if backup is not None:
            os.rename(backup, target)
        fsync_dir(plugins_dir)
        if failed is not None:
            _remove(failed)


def discard(backup: Path | None) -> None:
    """Delete a backup (or a staged folder with its dot parent) that is no longer needed."""
    if backup is None:
        return
    with os_errors("delete", backup):
        if backup.parent.name.startswith(STAGING_PREFIX):
            backup = backup.parent
        _remove(backup)


def extract_atomically(archive: PluginArchive, plugins_dir: Path, name: str) -> Path | None:
    """:func:`stage` then :func:`promote`; returns the backup to roll back or discard."""
    staged = stage(archive, plugins_dir, name)
    try:
        return promote(staged, plugins_dir, name)
    except BaseException:
        shutil.rmtree(staged.parent, ignore_errors=True)
        raise


def remove_plugin_dir(plugins_dir: Path, name: str) -> bool:
    """Delete ``plugins_dir/<name>`` (gone at once, by rename); False if it was absent."""
    target = plugins_dir / _check_name(name)
    with os_errors("remove", target):
        if not _exists(target):
            return False
        doomed = _aside(plugins_dir, "removing", name)
        os.rename(target, doomed)
        _remove(doomed)
    return True


def write_marker(folder: Path, tree_sha256: str) -> None:
    """Record which tree this instance extracted into ``folder``."""
    with os_errors("mark", folder):
        (folder / INSTALLED_MARKER).write_text(tree_sha256 + "\n", encoding="ascii")


def read_marker(folder: Path) -> str | None:
    try:
        return (folder / INSTALLED_MARKER).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


write_marker_async = in_thread(write_marker)
read_marker_async = in_thread(read_marker)
stage_async = in_thread(stage)
promote_async = in_thread(promote)
rollback_async = in_thread(rollback)
discard_async = in_thread(discard)
extract_atomically_async = in_thread(extract_atomically)
remove_plugin_dir_async = in_thread(remove_plugin_dir)


# --- object store --------------------------------------------------------------------


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(name: str, version: str, sha256: str) -> str:
    """``<name>/<version>/<sha256>.zip``: one immutable object per distinct zip."""
    _check_name(name)
    if not _SAFE_VERSION.fullmatch(version):
        raise invalid(
            ["version"],
            f"plugin version {version!r} cannot be part of an object "
            "key: use letters, digits, '.', '+', '_' or '-'",
        )
    if not _SHA256.fullmatch(sha256):
        raise invalid(["sha256"], f"{sha256!r} is not a lowercase hex SHA-256")
    return f"{name}/{version}/{sha256}.zip"


async def upload(
    store: ObjectStore, bucket: str, archive_bytes: bytes, name: str, version: str, sha256: str
) -> StoredObject:
    """Store the zip under :func:`object_key`, refusing bytes that do not hash to ``sha256``."""
    key = object_key(name, version, sha256)
    actual = await asyncio.to_thread(_sha256_hex, archive_bytes)
    if actual != sha256:
        raise ChecksumMismatch(
            f"refusing to store {key!r}: the zip's SHA-256 is {actual}",
            bucket=bucket,
            key=key,
            expected=sha256,
            actual=actual,
        )
    return await store.put(bucket, key, archive_bytes)


async def download(store: ObjectStore, bucket: str, key: str) -> bytes:
    """Fetch a plugin zip and check it against the SHA-256 in its key."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise invalid(["key"], f"{key!r} is not a plugin zip key (<name>/<version>/<sha256>.zip)")
    data = await store.get(bucket, key)
    actual, expected = await asyncio.to_thread(_sha256_hex, data), match["sha256"]
    if actual != expected:
        raise ChecksumMismatch(
            f"checksum mismatch for plugin zip {key!r} in bucket {bucket!r}: expected SHA-256 "
            f"{expected}, got {actual} ({len(data)} bytes); the stored object is corrupt or "
            "was replaced, so upload the plugin again",
            bucket=bucket,
            key=key,
            expected=expected,
            actual=actual,
        )
    return data
