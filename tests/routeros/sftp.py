"""SFTP on the emulated router, served straight from `RouterState.files` (no disk).

asyncssh's `SFTPServer` maps every operation to the local disk by default; each one is
overridden here, and those a router has no use for (links, making directories, statvfs) are
refused, so nothing ever touches the test machine's files. Files sit in the root directory, or
under `flash/` on a device with a flash disk (`RouterState.flash`); `x.backup`, `/x.backup`
and `./x.backup` name the same file, as on RouterOS. Reads see the file as it was when opened;
a written file appears in `state.files` when it is closed. SFTP needs the user's `ftp` policy.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_mod
import time
from dataclasses import dataclass
from typing import NoReturn

import asyncssh

from .state import RouterState

_ROOT = ("", ".", "..", "/")


@dataclass
class _Handle:
    name: str
    data: bytearray
    writable: bool
    dirty: bool = False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Only for asyncssh's `ranges@asyncssh.com` extension: a file without holes."""
        if whence == os.SEEK_DATA:
            if offset >= len(self.data):
                raise OSError(errno.ENXIO, "no more data")
            return offset
        if whence == os.SEEK_HOLE:
            return len(self.data)
        return offset


def _name(path: bytes) -> str:
    """`/flash/./x.backup` -> `flash/x.backup`; the root is `""`."""
    name = posixpath.normpath("/" + path.decode("utf-8", errors="replace")).lstrip("/")
    return "" if name == "." else name


def _refuse() -> NoReturn:
    raise asyncssh.SFTPOpUnsupported("operation not supported")


class MemorySFTPServer(asyncssh.SFTPServer):
    """An `asyncssh.SFTPServer` whose file system is one router's `files` dict."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], state: RouterState) -> None:
        super().__init__(chan)
        self._state = state
        self._user = str(chan.get_extra_info("username") or "").split("+", 1)[0]
        self._started = int(time.time())

    def _allowed(self) -> None:
        if self._state.sftp_denied or not self._state.has_policy(self._user, "ftp"):
            raise asyncssh.SFTPPermissionDenied("permission denied")

    def _is_dir(self, name: str) -> bool:
        return name in _ROOT or (self._state.flash and name.rstrip("/") == "flash")

    def _attrs(self, name: str) -> asyncssh.SFTPAttrs:
        if self._is_dir(name):
            return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY,
                                      permissions=stat_mod.S_IFDIR | 0o755,
                                      mtime=self._started, atime=self._started)
        if name not in self._state.files:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {name}")
        return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR,
                                  size=len(self._state.files[name]),
                                  permissions=stat_mod.S_IFREG | 0o644,
                                  mtime=self._started, atime=self._started)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self._allowed()
        name = _name(path)
        if self._is_dir(name):
            raise asyncssh.SFTPFileIsADirectory(f"{name or '/'} is a directory")
        writable = bool(pflags & asyncssh.FXF_WRITE)
        exists = name in self._state.files
        if not exists and not pflags & asyncssh.FXF_CREAT:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {name}")
        keep = exists and not pflags & asyncssh.FXF_TRUNC
        data = bytearray(self._state.files[name]) if keep else bytearray()
        return _Handle(name, data, writable, dirty=writable and not keep)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _Handle)
        return bytes(file_obj.data[offset:offset + size])

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _Handle)
        if not file_obj.writable:
            raise asyncssh.SFTPPermissionDenied("file not open for writing")
        end = offset + len(data)
        if len(file_obj.data) < offset:
            file_obj.data.extend(bytes(offset - len(file_obj.data)))
        file_obj.data[offset:end] = data
        file_obj.dirty = True
        return len(data)

    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _Handle) and file_obj.dirty:
            self._state.files[file_obj.name] = bytes(file_obj.data)

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        assert isinstance(file_obj, _Handle)
        return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR,
                                  size=len(file_obj.data),
                                  permissions=stat_mod.S_IFREG | 0o644, mtime=self._started)

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        self._allowed()
        return self._attrs(_name(path))

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self.stat(path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._attrs(_name(path))

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    def realpath(self, path: bytes) -> bytes:
        name = _name(path)
        return b"/" if name in _ROOT else ("/" + name.rstrip("/")).encode()

    def remove(self, path: bytes) -> None:
        self._allowed()
        name = _name(path)
        if self._state.files.pop(name, None) is None:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {name}")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._allowed()
        old, new = _name(oldpath), _name(newpath)
        if old not in self._state.files:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {old}")
        self._state.files[new] = self._state.files.pop(old)

    def listdir(self, path: bytes) -> list[bytes]:
        """Directory listing (asyncssh calls `lstat` on each name for its attributes)."""
        self._allowed()
        name = _name(path)
        if not self._is_dir(name):
            raise asyncssh.SFTPNoSuchFile("not a directory")
        prefix = "" if name in _ROOT else name.rstrip("/") + "/"
        entries = {f[len(prefix):].split("/", 1)[0] for f in self._state.files
                   if f.startswith(prefix)}
        if not prefix and self._state.flash:
            entries.add("flash")
        return [b".", b"..", *(entry.encode() for entry in sorted(entries))]

    # Refused rather than inherited: the defaults would act on the local disk.

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        _refuse()

    def rmdir(self, path: bytes) -> None:
        _refuse()

    def readlink(self, path: bytes) -> bytes:
        _refuse()

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        _refuse()

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        _refuse()

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        _refuse()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.rename(oldpath, newpath)

    def fsync(self, file_obj: object) -> None:
        return None
