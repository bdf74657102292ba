"""Encryption at rest: secrets (router and PPPoE passwords, secret plugin settings) and
stored objects (device backups).

Secrets: Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``, ASCII tokens fit for a
text column. The key comes from ``ISP_SECRET_KEY``; when unset, one is generated into
``ISP_DATA_DIR/secret.key`` on first start (mode 0600). Several instances must share the
same ``ISP_SECRET_KEY``.

Objects: :class:`ObjectCipher`, AES-256-GCM under a key derived from the same secret with
HKDF (``info=b"isp-object-store"``). Not Fernet, because backups are binary and up to
hundreds of MiB: Fernet tokens are base64 text (a third larger), CBC plus a separate HMAC
is slower, and a derived key keeps objects and credentials under separate keys while the
operator still manages one ``ISP_SECRET_KEY``. Each object is ``MAGIC | nonce | ciphertext
and tag``, authenticated together with its object key (so an object moved to another key
does not decrypt); anything without the magic is an object stored before encryption and
is returned as it is.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from isp.config import Settings
from isp.errors import ConfigError, ISPError

KEY_FILE = "secret.key"
MIN_PASSPHRASE = 32
OBJECT_MAGIC: Final = b"ISPOBJ\x01\x00"  # format version 1: AES-256-GCM
_NONCE: Final = 12


class ObjectCipher:
    """Seals objects at rest (AES-256-GCM); opens sealed ones, passes old clear ones."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @staticmethod
    def is_sealed(blob: bytes) -> bool:
        return blob.startswith(OBJECT_MAGIC)

    def seal(self, data: bytes, context: str) -> bytes:
        """``data`` encrypted and bound to ``context`` (the object's key)."""
        nonce = os.urandom(_NONCE)
        return OBJECT_MAGIC + nonce + self._aead.encrypt(nonce, data, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        """The clear bytes of a sealed object; an object without the magic as it is."""
        if not self.is_sealed(blob):
            return blob
        start = len(OBJECT_MAGIC)
        nonce, sealed = blob[start : start + _NONCE], blob[start + _NONCE :]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode())
        except InvalidTag as exc:
            raise ISPError(
                f"stored object {context} cannot be decrypted: ISP_SECRET_KEY differs from "
                "the key it was stored with, or the object was altered"
            ) from exc

    def __repr__(self) -> str:
        return "ObjectCipher(<key hidden>)"


class SecretBox:
    """Encrypts and decrypts short secrets; ciphertext is ASCII, fit for a text column.

    :meth:`objects` gives the :class:`ObjectCipher` derived from the same key.
    """

    __slots__ = ("_fernet", "_objects")

    def __init__(self, key: str) -> None:
        raw = _fernet_key(key)
        self._fernet = Fernet(raw)
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"isp-object-store")
        self._objects = ObjectCipher(derived.derive(base64.urlsafe_b64decode(raw)))

    def objects(self) -> ObjectCipher:
        return self._objects

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ISPError(
                "a stored secret cannot be decrypted: ISP_SECRET_KEY differs from the key "
                "it was encrypted with"
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"


def _fernet_key(key: str) -> bytes:
    raw = key.encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    if len(key) < MIN_PASSPHRASE:
        raise ConfigError(
            f"ISP_SECRET_KEY: must be a Fernet key or at least {MIN_PASSPHRASE} characters"
        )
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"isp-secret-box")
    return base64.urlsafe_b64encode(derived.derive(raw))


_process_box: SecretBox | None = None


def install_box(box: SecretBox) -> None:
    """Make ``box`` the one that models use to reveal their secrets in this process."""
    global _process_box
    _process_box = box


def process_box() -> SecretBox:
    if _process_box is None:
        raise ISPError("secrets are not available: the service has not started")
    return _process_box


def load_secret_box(settings: Settings) -> SecretBox:
    """The box for this process. Blocking file I/O: call at start-up, not while serving."""
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value())
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    return SecretBox(path.read_text().strip())
