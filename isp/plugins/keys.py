"""Ed25519 signing keys: make a pair, read a signer's key, read the trusted-keys file.

:func:`write_keypair` (``isp plugins keygen``) writes the private key as PKCS#8 PEM
(mode 0600) and ``<path>.pub``, one line ``ed25519 <base64>``. ``ISP_PLUGIN_TRUSTED_KEYS``
names a file of such lines, one per trusted signer (:func:`load_trusted_keys`). A key's
id is the first 16 hex digits of the SHA-256 of its 32 raw bytes: what a plugin's
``signer`` shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from isp.config import Settings
from isp.errors import ConfigError, ValidationFailed
from isp.plugins.archive import in_thread, os_errors

KEY_TYPE: Final = "ed25519"

TrustedKeys = Mapping[str, Ed25519PublicKey]  # key id -> public key


def raw_bytes(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (what ``signer`` shows)."""
    return hashlib.sha256(raw_bytes(public)).hexdigest()[:16]


def public_key_line(public: Ed25519PublicKey) -> str:
    return f"{KEY_TYPE} {base64.b64encode(raw_bytes(public)).decode('ascii')}"


def decode_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def parse_public_key_line(line: str) -> Ed25519PublicKey:
    """``ed25519 <base64>`` (anything after the key is a comment); ValueError says why."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"expected '{KEY_TYPE} <base64 key>', got {line.strip()[:80]!r}")
    if parts[0] != KEY_TYPE:
        raise ValueError(f"unknown key type {parts[0][:40]!r}; only {KEY_TYPE!r} is supported")
    return decode_public_key(parts[1])


def load_trusted_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The keys of ``ISP_PLUGIN_TRUSTED_KEYS``: one ``ed25519 <base64> [comment]`` per line,
    blank lines and ``#`` comments allowed. ValueError names the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from exc
    keys: dict[str, Ed25519PublicKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            public = parse_public_key_line(line)
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
        keys[key_id(public)] = public
    return keys


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The deployment's trusted keys (none when ``ISP_PLUGIN_TRUSTED_KEYS`` is unset)."""
    if settings.plugin_trusted_keys is None:
        return {}
    try:
        return load_trusted_keys(settings.plugin_trusted_keys)
    except ValueError as exc:
        raise ConfigError(
            f"ISP_PLUGIN_TRUSTED_KEYS: {exc}",
            errors=[{"variable": "ISP_PLUGIN_TRUSTED_KEYS", "msg": str(exc)}],
        ) from None


trusted_keys_async = in_thread(trusted_keys)


def write_keypair(path: Path) -> str:
    """Write a new private key to ``path`` (0600) and ``path.pub``; return the key id.

    Refuses to overwrite either file: a lost signing key cannot be recovered, and a
    replaced one would silently stop matching every trusted-keys file that lists it.
    """
    public_path = path.with_name(path.name + ".pub")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    for target in (path, public_path):
        if target.exists() or target.is_symlink():
            raise ValidationFailed(
                f"{target} exists; refusing to overwrite a key (choose another path)",
                errors=[{"loc": ["path"], "msg": "exists"}],
            )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os_errors("write the private key", path), open(os.open(path, flags, 0o600), "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(pem)
    try:
        with (
            os_errors("write the public key", public_path),
            open(os.open(public_path, flags, 0o644), "w", encoding="ascii") as out,
        ):
            out.write(public_key_line(private.public_key()) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)  # no private key without its public half
        raise
    return key_id(private.public_key())


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key written by :func:`write_keypair`; a clear error for anything else."""
    with os_errors("read the signing key", path):
        data = path.read_bytes()
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(
            f"{path} is not an unencrypted PEM private key (make one with isp plugins keygen)",
            errors=[{"loc": ["key"], "msg": str(exc)}],
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ValidationFailed(
            f"{path} is not an Ed25519 key; plugin signatures use Ed25519 (isp plugins keygen)",
            errors=[{"loc": ["key"], "msg": "not an Ed25519 key"}],
        )
    return private
