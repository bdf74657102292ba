"""Plugin zips in memory: validate them, and hash a plugin's files.

Nothing here writes a file or imports plugin code:

1. :func:`inspect_zip` refuses anything hostile or malformed before a byte is written
   (413 when the upload is too large, 422 naming the entry otherwise) and returns a
   :class:`PluginArchive` holding the plugin's files in memory.
2. :func:`file_digest` (in memory) and :func:`tree_digest` (on disk) hash a plugin's files
   identically, so start-up can tell an installed plugin from a tampered one.

Both are CPU- or disk-bound; their ``*_async`` twins run them in a worker thread so the
event loop never blocks. zipfile errors become ``isp.errors`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import lzma
import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, ParamSpec, TypeVar

from isp.errors import ISPError, PayloadTooLarge, ValidationFailed
from isp.plugins.manifest import Manifest, parse_manifest

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

@dataclass(frozen=True, slots=True)
class PluginArchive:
    """A validated plugin zip; ``files`` are keyed by POSIX path below the plugin root."""

    sha256: str  # hex SHA-256 of the whole zip
    size: int  # bytes in the zip
    manifest: Manifest  # manifest.json, parsed and validated once
    files: Mapping[str, bytes]  # sorted by path; bytecode and macOS metadata left out
    root_prefix: str  # the plugin folder inside the zip, or "" when files are at its root
    tree_sha256: str  # file_digest(files), i.e. tree_digest() of the extracted folder
    ignored: tuple[str, ...] = ()  # entries skipped (for the log)


def in_thread(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(func, *args, **kwargs)

    run.__name__, run.__qualname__ = f"{func.__name__}_async", f"{func.__qualname__}_async"
    run.__doc__ = f":func:`{func.__name__}` in a worker thread, so the event loop never blocks."
    return run


def invalid(loc: list[Any], detail: str, **more: Any) -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"loc": loc, "msg": detail, **more}])


def bad_entry(name: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"zip entry {name!r} {why}", errors=[{"loc": ["file", name], "msg": why}]
    )


def name_problem(name: str) -> str | None:
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


def is_ignored(path: str) -> bool:
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
        raise invalid(["file"], "the zip is empty; it must hold a plugin")
    if len(infos) > limit:
        raise invalid(["file"], f"the zip has {len(infos)} entries; at most {limit} are allowed")
    seen: dict[str, str] = {}  # case-folded path -> entry name
    files: set[str] = set()
    total = 0
    for info in infos:
        raw = info.orig_filename  # zipfile cuts ``filename`` at a NUL: check the original
        why = name_problem(raw) or _kind_problem(info)
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
            raise bad_entry(raw, why)
        seen[key] = raw
        files.update(() if raw.endswith("/") else (key,))
        total += info.file_size
    if total > total_limit:
        raise invalid(
            ["file"],
            f"the zip would expand to {total} bytes; the limit is {total_limit} bytes uncompressed",
        )
    for key in files:  # "a" a file and "a/b" too: no folder can be both
        parts = key.split("/")
        for parent in ("/".join(parts[:depth]) for depth in range(1, len(parts))):
            if parent in files:
                raise bad_entry(seen[key], f"is inside {seen[parent]!r}, which is a file")


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
        raise invalid(
            ["file"],
            "the zip must hold one plugin folder, or the plugin's files "
            f"with manifest.json at its root; its top level has: {found}",
        )
    raise invalid(
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
        raise bad_entry(info.orig_filename, f"is corrupt and cannot be read ({exc})") from exc
    if len(content) > cap:
        raise bad_entry(info.orig_filename, "expands past its declared size; refusing it")
    return content


def inspect_zip(
    data: bytes,
    *,
    max_size: int,
    max_entries: int = 1000,
    max_uncompressed: int = 64 * MiB,
    max_ratio: int = 100,
) -> PluginArchive:
    """Validate a plugin zip completely, in memory; nothing is written anywhere.

    Raises ``PayloadTooLarge`` when ``data`` is over ``max_size``, else ``ValidationFailed``
    whose ``errors[].loc`` names the entry (``["file", "a/../../x"]``) or the manifest:
    not a zip, encrypted or special entries, unsafe or clashing names, too many entries or
    bytes, a zip bomb, more than one plugin, no ``manifest.json`` or ``__init__.py``; and
    ``PluginInvalid`` for a manifest :func:`~isp.plugins.manifest.parse_manifest` refuses
    (the one parser, also used on disk).
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
        raise invalid(["file"], "the upload is not a zip file (no zip signature at its start)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise invalid(
            ["file"], f"the upload is not a readable zip file; it is truncated or corrupt ({exc})"
        ) from exc
    with zf:
        _check_entries(zf.infolist(), max_entries, max_uncompressed, max_ratio)
        entries = {i.orig_filename: i for i in zf.infolist() if not i.orig_filename.endswith("/")}
        ignored = tuple(sorted(name for name in entries if is_ignored(name)))
        kept = {name: info for name, info in sorted(entries.items()) if name not in ignored}
        root = _plugin_root(set(kept))
        prefix = f"{root}/" if root else ""
        if f"{prefix}{MANIFEST}" not in kept:
            raise invalid(
                ["file", f"{prefix}{MANIFEST}"], f"the plugin folder {root!r} has no {MANIFEST}"
            )
        files: dict[str, bytes] = {}
        budget = max_uncompressed
        for name, info in kept.items():
            files[name.removeprefix(prefix)] = content = _read(zf, info, budget)
            budget -= len(content)
    if _INIT not in files:
        raise invalid(
            ["file", f"{prefix}{_INIT}"],
            f"the plugin has no {_INIT} at its root "
            f"({prefix or 'the zip root'}); a plugin is a Python package",
        )
    return PluginArchive(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        manifest=parse_manifest(files[MANIFEST], f"{prefix}{MANIFEST}", folder=root or None),
        files=MappingProxyType(files),
        root_prefix=root,
        tree_sha256=file_digest(files),
        ignored=ignored,
    )


inspect_zip_async = in_thread(inspect_zip)


@contextlib.contextmanager
def os_errors(action: str, path: Path) -> Iterator[None]:
    """The one place where OS errors on the plugins folder become an ``ISPError``."""
    try:
        yield
    except OSError as exc:
        where = str(path)
        raise ISPError(f"could not {action} {where!r}: {exc.strerror or exc}", path=where) from exc


# --- digests -------------------------------------------------------------------------


def _digest_skips(path: str) -> bool:
    return is_ignored(path) or _EDITOR_TEMP.fullmatch(path.rsplit("/", 1)[-1]) is not None


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
    with os_errors("read plugin files under", path):
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


tree_digest_async = in_thread(tree_digest)
