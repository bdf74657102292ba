"""Plugin zips built in memory, hostile ones included, for the store tests.

``zipfile`` writes only well-formed archives: it resets flag bits and sizes on write and
cuts names at a NUL. :func:`entry` and :func:`make_zip` get around that, so a test can
build exactly the archive an attacker would send.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any

ManifestData = dict[str, Any]

DEMO_MANIFEST: ManifestData = {
    "name": "demo",
    "version": "1.0.0",
    "description": "A plugin for the store tests",
    "hooks": ["service_provision"],
}

_CENTRAL: bytes = b"PK\x01\x02"
_END: bytes = b"PK\x05\x06"


def entry(
    name: str,
    *,
    mode: int | None = None,
    flag_bits: int = 0,
    declared_size: int = 0,
    compress_type: int = zipfile.ZIP_DEFLATED,
    create_system: int = 3,
) -> zipfile.ZipInfo:
    """A ZipInfo whose name, Unix ``mode``, flag bits and declared size survive writing.

    ``mode`` defaults to a regular file (0o644) or, for names ending in '/', a folder.
    ``declared_size`` (when not 0) replaces the true uncompressed size in the central
    directory; ``flag_bits`` are OR-ed into it (0x1: encrypted).
    """
    info = zipfile.ZipInfo("placeholder", date_time=(2024, 1, 2, 3, 4, 6))
    info.filename = info.orig_filename = name  # after __init__, which would cut at a NUL
    info.compress_type = compress_type
    info.create_system = create_system
    if mode is None:
        mode = (stat.S_IFDIR | 0o755) if name.endswith("/") else (stat.S_IFREG | 0o644)
    info.external_attr = mode << 16
    info.flag_bits = flag_bits
    info.file_size = declared_size
    return info


def make_zip(
    entries: Iterable[tuple[zipfile.ZipInfo | str, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """Write ``entries`` in order (duplicates allowed) and apply each entry's overrides."""
    overrides: list[tuple[int, int]] = []
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": exactly what some tests want
        for item, data in entries:
            info = item if isinstance(item, zipfile.ZipInfo) else entry(item)
            if isinstance(item, str):
                info.compress_type = compression
            overrides.append((info.flag_bits, info.file_size))
            archive.writestr(info, data)
    written = bytearray(buffer.getvalue())
    _patch_central_directory(written, overrides)
    return bytes(written)


def _patch_central_directory(data: bytearray, overrides: list[tuple[int, int]]) -> None:
    end = data.rfind(_END)
    (count,) = struct.unpack_from("<H", data, end + 10)
    (position,) = struct.unpack_from("<I", data, end + 16)
    for flag_bits, declared_size in overrides[:count]:
        assert data[position : position + 4] == _CENTRAL
        if flag_bits:
            (flags,) = struct.unpack_from("<H", data, position + 8)
            struct.pack_into("<H", data, position + 8, flags | flag_bits)
        if declared_size:
            struct.pack_into("<I", data, position + 24, declared_size)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
        position += 46 + name_len + extra_len + comment_len


def plugin_entries(
    prefix: str = "demo/", manifest: ManifestData | bytes | None = None
) -> list[tuple[str, bytes]]:
    """The files of a small valid plugin, under ``prefix`` ("" for the root layout)."""
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest or DEMO_MANIFEST)
    return [
        (f"{prefix}manifest.json", raw.encode() if isinstance(raw, str) else raw),
        (f"{prefix}__init__.py", b"from isp.plugins import Plugin\n\nplugin = Plugin()\n"),
        (f"{prefix}hooks/__init__.py", b""),
        (f"{prefix}hooks/provision.py", b"async def provision(service, db):\n    return None\n"),
        (f"{prefix}README.md", "# Demo\n\nUnicode is fine: caf\u00e9\n".encode()),
    ]


def plugin_zip(prefix: str = "demo/", manifest: ManifestData | bytes | None = None) -> bytes:
    return make_zip(plugin_entries(prefix, manifest))
