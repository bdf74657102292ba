"""Plugin zips as bytes and files: validate, hash, store, and extract atomically.

The part of installing a plugin that touches no database and imports no plugin code:

1. :func:`inspect_zip` refuses anything hostile or malformed before a byte is written
   (413 when the upload is too large, 422 naming the entry otherwise) and returns a
   :class:`PluginArchive` holding the plugin's files in memory.
2. :func:`upload` keeps the zip in the object store under ``<name>/<version>/<sha256>.zip``
   so every instance installs the same bytes; :func:`download` checks them again.
3. :func:`stage` writes the files into ``plugins_dir/.staging-<name>-<random>`` (the loader
   skips dot folders); :func:`promote` swaps it into ``plugins_dir/<name>`` by renames on
   one filesystem and returns the previous folder, which the caller restores with
   :func:`rollback` or deletes with :func:`discard` once the new version has loaded.
4. :func:`file_digest` (in memory) and :func:`tree_digest` (on disk) hash a plugin's files
   identically, so start-up can tell an installed plugin from a tampered one.

The sync functions are CPU- or disk-bound; each ``*_async`` twin runs its function in a
worker thread so the event loop never blocks. zipfile and OS errors become ``isp.errors``
here; :class:`ChecksumMismatch` (a ``StorageError``, 502) is this module's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import lzma
import os
import re
import secrets
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, ParamSpec, TypeVar

from pydantic import ValidationError

from isp.errors import ISPError, PayloadTooLarge, StorageError, ValidationFailed
from isp.storage import ObjectStore, StoredObject

__all__ = [
    "MANIFEST",
    "ChecksumMismatch",
    "ManifestValidator",
    "PluginArchive",
    "discard",
    "discard_async",
    "download",
    "extract_atomically",
    "extract_atomically_async",
    "file_digest",
    "inspect_zip",
    "inspect_zip_async",
    "object_key",
    "promote",
    "promote_async",
    "remove_plugin_dir",
    "remove_plugin_dir_async",
    "rollback",
    "rollback_async",
    "stage",
    "stage_async",
    "tree_digest",
    "tree_digest_async",
    "upload",
]

P = ParamSpec("P")
R = TypeVar("R")

MiB: Final = 1024 * 1024
MANIFEST: Final = "manifest.json"
# Written at the plugin root on extraction: the tree digest of what was extracted. Files
# still matching it were left alone (an instance behind an upgrade done elsewhere);
# files matching neither it nor the record were edited by hand.
INSTALLED_MARKER: Final = ".isp-installed"
_INIT: Final = "__init__.py"
_ZIP_MAGIC: Final = (b"PK\x03\x04", b"PK\x05\x06")  # a first local header; an empty zip
_METHODS: Final = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# Small files may compress very well (repetitive text); below this size a high ratio is
# harmless anyway, because the total uncompressed size is capped.
_RATIO_FLOOR: Final = 1 * MiB
_SPECIAL: Final = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
}
_DRIVE: Final = re.compile(r"[A-Za-z]:")
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")  # Manifest is stricter
_SAFE_VERSION: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_KEY: Final = re.compile(r"[^/]+/[^/]+/(?P<sha256>[0-9a-f]{64})\.zip")
_EDITOR_TEMP: Final = re.compile(r".*~|\.#.*|#.*#|\..*\.sw[a-px]|4913")
_DIGEST_TAG: Final = b"isp-plugin-tree-v1\n"
_READ_ERRORS: Final = (
    zipfile.BadZipFile,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
)

ManifestValidator = Callable[[dict[str, Any]], object]
"""Checks the parsed manifest (e.g. ``Manifest.model_validate``); may raise pydantic's
``ValidationError`` (reported field by field under ``manifest.json``) or an ``ISPError``."""


class ChecksumMismatch(StorageError):
    """Stored bytes do not hash to the SHA-256 they were stored under."""

    status = 502
    title = "Checksum mismatch"
    type_slug = "checksum-mismatch"


@dataclass(frozen=True, slots=True)
class PluginArchive:
    """A validated plugin zip; ``files`` are keyed by POSIX path below the plugin root."""

    sha256: str  # hex SHA-256 of the whole zip
    size: int  # bytes in the zip
    manifest: dict[str, Any]  # manifest.json as parsed; not yet a Manifest model
    files: Mapping[str, bytes]  # sorted by path; bytecode and macOS metadata left out
    root_prefix: str  # the plugin folder inside the zip, or "" when files are at its root
    tree_sha256: str  # file_digest(files), i.e. tree_digest() of the extracted folder
    ignored: tuple[str, ...] = ()  # entries skipped (for the log)


def _in_thread(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(func, *args, **kwargs)

    run.__name__, run.__qualname__ = f"{func.__name__}_async", f"{func.__qualname__}_async"
    run.__doc__ = f":func:`{func.__name__}` in a worker thread, so the event loop never blocks."
    return run


def _invalid(loc: list[Any], detail: str, **more: Any) -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"loc": loc, "msg": detail, **more}])


def _bad_entry(name: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"zip entry {name!r} {why}", errors=[{"loc": ["file", name], "msg": why}]
    )


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative path inside a plugin, or None."""
    if "\x00" in name:
        return "contains a NUL character"
    if any(ord(char) < 0x20 or char == "\x7f" for char in name):
        return "contains a control character"
    if name.startswith("/"):
        return "is an absolute path; entries must be relative to the zip's root"
    if _DRIVE.match(name):
        return "starts with a drive letter; entries must be relative to the zip's root"
    if "\\" in name:
        return "contains a backslash; zip entries must separate folders with '/'"
    for part in name.removesuffix("/").split("/"):
        if part == "..":
            return "contains a '..' segment that would escape the plugin folder"
        if part in {"", "."}:
            return "contains an empty or '.' path segment"
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            return "has a path segment longer than 255 bytes"
    return None


def _kind_problem(info: zipfile.ZipInfo) -> str | None:
    """Why the entry is not a plain file or folder that we can decompress, or None."""
    mode = info.external_attr >> 16  # Unix mode, as zip and Info-ZIP store it
    if kind := _SPECIAL.get(stat.S_IFMT(mode)):
        return f"is {kind}; a plugin may contain only regular files and folders"
    if stat.S_ISDIR(mode) and not info.orig_filename.endswith("/"):
        return "is marked as a folder but its name does not end with '/'"
    if info.flag_bits & 0x1:
        return "is encrypted; upload a zip made without a password"
    if info.compress_type not in _METHODS:
        return f"uses unsupported compression method {info.compress_type}; use deflate"
    return None


def _ignored(path: str) -> bool:
    """macOS metadata, Python bytecode and our install marker: never extracted."""
    parts = path.split("/")
    return (
        path == INSTALLED_MARKER
        or parts[0] == "__MACOSX"
        or any(part in {".DS_Store", "__pycache__"} for part in parts)
        or parts[-1].endswith((".pyc", ".pyo"))
    )


def _check_entries(infos: list[zipfile.ZipInfo], limit: int, total_limit: int, ratio: int) -> None:
    """Refuse the zip at its first hostile entry, before anything is decompressed."""
    if not infos:
        raise _invalid(["file"], "the zip is empty; it must hold a plugin")
    if len(infos) > limit:
        raise _invalid(["file"], f"the zip has {len(infos)} entries; at most {limit} are allowed")
    seen: dict[str, str] = {}  # case-folded path -> entry name
    files: set[str] = set()
    total = 0
    for info in infos:
        raw = info.orig_filename  # zipfile cuts ``filename`` at a NUL: check the original
        why = _name_problem(raw) or _kind_problem(info)
        path = raw.removesuffix("/")
        key = unicodedata.normalize("NFC", path).casefold()
        if why is None and (other := seen.get(key)) is not None:
            same = other.removesuffix("/") == path
            why = "appears twice" if same else f"clashes with {other!r}: names differ only in case"
        if why is None and info.file_size > max(_RATIO_FLOOR, ratio * max(info.compress_size, 1)):
            why = (
                f"would expand {info.compress_size} bytes to {info.file_size}, more than "
                f"{ratio}:1; refusing a likely zip bomb"
            )
        if why is not None:
            raise _bad_entry(raw, why)
        seen[key] = raw
        files.update(() if raw.endswith("/") else (key,))
        total += info.file_size
    if total > total_limit:
        raise _invalid(
            ["file"],
            f"the zip would expand to {total} bytes; the limit is {total_limit} bytes uncompressed",
        )
    for key in files:  # "a" a file and "a/b" too: no folder can be both
        parts = key.split("/")
        for parent in ("/".join(parts[:depth]) for depth in range(1, len(parts))):
            if parent in files:
                raise _bad_entry(seen[key], f"is inside {seen[parent]!r}, which is a file")


def _plugin_root(paths: set[str]) -> str:
    """'' when manifest.json is at the zip's root, else the one folder holding the plugin."""
    if MANIFEST in paths:
        return ""
    folders = sorted({path.split("/", 1)[0] for path in paths if "/" in path})
    loose = sorted(path for path in paths if "/" not in path)
    if len(folders) == 1 and not loose:
        return folders[0]
    if len(folders) > 1 or (folders and loose):
        found = ", ".join([f"{name}/" for name in folders] + loose)
        raise _invalid(
            ["file"],
            "the zip must hold one plugin folder, or the plugin's files "
            f"with manifest.json at its root; its top level has: {found}",
        )
    raise _invalid(
        ["file", MANIFEST],
        f"the zip has no {MANIFEST}; a plugin needs one at its root, next to __init__.py",
    )


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The entry's bytes: never more than its declared size or what is left of the budget."""
    cap = min(info.file_size, budget)
    try:
        with zf.open(info) as fh:
            content = fh.read(cap + 1)
    except _READ_ERRORS as exc:
        raise _bad_entry(info.orig_filename, f"is corrupt and cannot be read ({exc})") from exc
    if len(content) > cap:
        raise _bad_entry(info.orig_filename, "expands past its declared size; refusing it")
    return content


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # json would silently keep the last one
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _parse_manifest(raw: bytes, where: str, validate: ManifestValidator | None) -> dict[str, Any]:
    loc: list[Any] = [MANIFEST]
    try:
        value = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise _invalid(loc, f"{where} is not UTF-8 text (bad byte at offset {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise _invalid(
            loc,
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            line=exc.lineno,
            col=exc.colno,
        ) from exc
    except (ValueError, RecursionError) as exc:  # a repeated key; absurdly deep nesting
        raise _invalid(loc, f"{where} is not usable JSON: {exc}") from exc
    if not isinstance(value, dict):
        kind = {"list": "an array", "str": "a string"}.get(type(value).__name__, "a scalar")
        raise _invalid(loc, f"{where} must be a JSON object ({{...}}), not {kind}")
    if validate is not None:
        try:
            validate(value)
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False)
            said = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in problems)
            raise ValidationFailed(
                f"{where} is invalid: {said}",
                errors=[{"loc": [MANIFEST, *e["loc"]], "msg": e["msg"]} for e in problems],
            ) from exc
    return value


def inspect_zip(
    data: bytes,
    *,
    max_size: int,
    max_entries: int = 1000,
    max_uncompressed: int = 64 * MiB,
    max_ratio: int = 100,
    validate_manifest: ManifestValidator | None = None,
) -> PluginArchive:
    """Validate a plugin zip completely, in memory; nothing is written anywhere.

    Raises ``PayloadTooLarge`` when ``data`` is over ``max_size``, else ``ValidationFailed``
    whose ``errors[].loc`` names the entry (``["file", "a/../../x"]``) or the manifest:
    not a zip, encrypted or special entries, unsafe or clashing names, too many entries or
    bytes, a zip bomb, more than one plugin, no ``manifest.json`` or ``__init__.py``, a
    manifest that is not a UTF-8 JSON object or that ``validate_manifest`` refuses.
    Accepts one plugin folder (``<name>/manifest.json``) or the files at the zip's root.
    """
    if len(data) > max_size:
        raise PayloadTooLarge(
            f"the plugin zip is {len(data)} bytes; the limit is {max_size} bytes "
            "(ISP_PLUGIN_MAX_UPLOAD)",
            errors=[{"loc": ["file"], "msg": f"larger than {max_size} bytes"}],
            limit=max_size,
            size=len(data),
        )
    if not data.startswith(_ZIP_MAGIC):
        raise _invalid(["file"], "the upload is not a zip file (no zip signature at its start)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise _invalid(
            ["file"], f"the upload is not a readable zip file; it is truncated or corrupt ({exc})"
        ) from exc
    with zf:
        _check_entries(zf.infolist(), max_entries, max_uncompressed, max_ratio)
        entries = {i.orig_filename: i for i in zf.infolist() if not i.orig_filename.endswith("/")}
        ignored = tuple(sorted(name for name in entries if _ignored(name)))
        kept = {name: info for name, info in sorted(entries.items()) if name not in ignored}
        root = _plugin_root(set(kept))
        prefix = f"{root}/" if root else ""
        if f"{prefix}{MANIFEST}" not in kept:
            raise _invalid(
                ["file", f"{prefix}{MANIFEST}"], f"the plugin folder {root!r} has no {MANIFEST}"
            )
        files: dict[str, bytes] = {}
        budget = max_uncompressed
        for name, info in kept.items():
            files[name.removeprefix(prefix)] = content = _read(zf, info, budget)
            budget -= len(content)
    if _INIT not in files:
        raise _invalid(
            ["file", f"{prefix}{_INIT}"],
            f"the plugin has no {_INIT} at its root "
            f"({prefix or 'the zip root'}); a plugin is a Python package",
        )
    return PluginArchive(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        manifest=_parse_manifest(files[MANIFEST], f"{prefix}{MANIFEST}", validate_manifest),
        files=MappingProxyType(files),
        root_prefix=root,
        tree_sha256=file_digest(files),
        ignored=ignored,
    )


inspect_zip_async = _in_thread(inspect_zip)


# --- digests -------------------------------------------------------------------------


def _digest_skips(path: str) -> bool:
    return _ignored(path) or _EDITOR_TEMP.fullmatch(path.rsplit("/", 1)[-1]) is not None


def _feed(digest: hashlib._Hash, path: str, kind: bytes, content: bytes) -> None:
    digest.update(b"%s%s\0%d\0" % (kind, path.encode("utf-8", "surrogateescape"), len(content)))
    digest.update(content)


def _sort_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def file_digest(files: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> str:
    """Deterministic SHA-256 (hex) of a plugin's files; equals :func:`tree_digest` on disk.

    Format, version 1: SHA-256 over ``b"isp-plugin-tree-v1\\n"``, then for every file in
    order of its POSIX path relative to the plugin root (compared as UTF-8 bytes)
    ``b"F" + path + b"\\0" + str(len(content)) + b"\\0" + content``. On disk a symbolic
    link is fed as ``b"L"`` with its target as content and any other non-regular file
    as ``b"O"`` with no content, so planting one changes the digest. Skipped:
    ``__pycache__`` folders, ``*.pyc``/``*.pyo``, ``__MACOSX``, ``.DS_Store`` and editor
    temp files (``*~``, ``.#*``, ``#*#``, ``.*.sw?``, ``4913``). Folders count only
    through the files they hold.
    """
    digest = hashlib.sha256(_DIGEST_TAG)
    items = files.items() if isinstance(files, Mapping) else files
    for path, content in sorted(items, key=lambda item: _sort_key(item[0])):
        if not _digest_skips(path):
            _feed(digest, path, b"F", content)
    return digest.hexdigest()


def tree_digest(path: Path) -> str:
    """:func:`file_digest` of the plugin folder ``path``, read without following links."""
    found: list[tuple[str, os.DirEntry[str]]] = []
    pending = [(os.fspath(path), "")]
    with _os_errors("read plugin files under", path):
        while pending:
            folder, rel = pending.pop()
            with os.scandir(folder) as listing:
                for entry in listing:
                    if _digest_skips(relpath := f"{rel}{entry.name}"):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, f"{relpath}/"))
                    else:
                        found.append((relpath, entry))
        digest = hashlib.sha256(_DIGEST_TAG)
        for relpath, entry in sorted(found, key=lambda item: _sort_key(item[0])):
            if entry.is_symlink():
                _feed(digest, relpath, b"L", os.fsencode(os.readlink(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                _feed(digest, relpath, b"F", Path(entry.path).read_bytes())
            else:
                _feed(digest, relpath, b"O", b"")
    return digest.hexdigest()


# --- extraction ----------------------------------------------------------------------


@contextlib.contextmanager
def _os_errors(action: str, path: Path) -> Iterator[None]:
    """The one place where OS errors on the plugins folder become an ``ISPError``."""
    try:
        yield
    except OSError as exc:
        where = str(path)
        raise ISPError(f"could not {action} {where!r}: {exc.strerror or exc}", path=where) from exc


def _check_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise _invalid(
            ["name"],
            f"plugin name {name!r} cannot name a folder: use at most 100 "
            "letters, digits, '_' or '-', not starting with '-'",
        )
    return name


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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(root: Path, rel: str, content: bytes) -> None:
    """Create ``root/rel`` (0o644) and its folders (0o755), never through a link."""
    if (why := _name_problem(rel)) is not None:  # validated already: defence in depth
        raise _bad_entry(rel, why)
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
    """Write the plugin's files into a new ``plugins_dir/.staging-<name>-*`` folder.

    On any failure the staging folder is deleted: ``plugins_dir`` is left as it was.
    """
    prefix = f".staging-{_check_name(name)}-"
    with _os_errors("create a staging folder in", plugins_dir):
        plugins_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=prefix, dir=plugins_dir))
    try:
        with _os_errors("write plugin files to", staged):
            os.chmod(staged, 0o755)
            root = staged.resolve(strict=True)
            for rel, content in archive.files.items():
                if not _ignored(rel):
                    _write_file(root, rel, content)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def promote(staged: Path, plugins_dir: Path, name: str) -> Path | None:
    """Move ``staged`` to ``plugins_dir/<name>``; return where the previous folder went.

    Two renames on one filesystem: the current folder (if any) to ``.old-<name>-*``, then
    the staged one into place, so ``<name>`` is missing only between the two. Returns
    None when there was no previous folder.
    """
    target = plugins_dir / _check_name(name)
    if staged.parent.resolve() != plugins_dir.resolve():
        raise ISPError(f"staged folder {str(staged)!r} is not directly in {str(plugins_dir)!r}")
    backup = None
    with _os_errors("install the plugin folder", target):
        if _exists(target):
            backup = _aside(plugins_dir, "old", name)
            os.rename(target, backup)
        try:
            os.rename(staged, target)
        except OSError:
            if backup is not None:
                os.rename(backup, target)
            raise
        _fsync_dir(plugins_dir)
    return backup


def rollback(backup: Path | None, plugins_dir: Path, name: str) -> None:
    """Undo :func:`promote`: ``backup`` becomes ``<name>`` again (no backup: ``<name>`` goes)."""
    target = plugins_dir / _check_name(name)
    with _os_errors("restore the previous plugin folder", target):
        failed = None
        if _exists(target):
            failed = _aside(plugins_dir, "failed", name)
            os.rename(target, failed)
        if backup is not None:
            os.rename(backup, target)
        _fsync_dir(plugins_dir)
        if failed is not None:
            _remove(failed)


def discard(backup: Path | None) -> None:
    """Delete a backup (or a staged folder) that is no longer needed."""
    if backup is not None:
        with _os_errors("delete", backup):
            _remove(backup)


def extract_atomically(archive: PluginArchive, plugins_dir: Path, name: str) -> Path | None:
    """:func:`stage` then :func:`promote`; returns the backup to roll back or discard."""
    staged = stage(archive, plugins_dir, name)
    try:
        return promote(staged, plugins_dir, name)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def remove_plugin_dir(plugins_dir: Path, name: str) -> bool:
    """Delete ``plugins_dir/<name>`` (gone at once, by rename); False if it was absent."""
    target = plugins_dir / _check_name(name)
    with _os_errors("remove", target):
        if not _exists(target):
            return False
        doomed = _aside(plugins_dir, "removing", name)
        os.rename(target, doomed)
        _remove(doomed)
    return True


def write_marker(folder: Path, tree_sha256: str) -> None:
    """Record which tree this instance extracted into ``folder``."""
    with _os_errors("mark", folder):
        (folder / INSTALLED_MARKER).write_text(tree_sha256 + "\n", encoding="ascii")


def read_marker(folder: Path) -> str | None:
    try:
        return (folder / INSTALLED_MARKER).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


tree_digest_async = _in_thread(tree_digest)
write_marker_async = _in_thread(write_marker)
read_marker_async = _in_thread(read_marker)
stage_async = _in_thread(stage)
promote_async = _in_thread(promote)
rollback_async = _in_thread(rollback)
discard_async = _in_thread(discard)
extract_atomically_async = _in_thread(extract_atomically)
remove_plugin_dir_async = _in_thread(remove_plugin_dir)


# --- object store --------------------------------------------------------------------


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(name: str, version: str, sha256: str) -> str:
    """``<name>/<version>/<sha256>.zip``: one immutable object per distinct zip."""
    _check_name(name)
    if not _SAFE_VERSION.fullmatch(version):
        raise _invalid(
            ["version"],
            f"plugin version {version!r} cannot be part of an object "
            "key: use letters, digits, '.', '+', '_' or '-'",
        )
    if not _SHA256.fullmatch(sha256):
        raise _invalid(["sha256"], f"{sha256!r} is not a lowercase hex SHA-256")
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
        raise _invalid(["key"], f"{key!r} is not a plugin zip key (<name>/<version>/<sha256>.zip)")
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
