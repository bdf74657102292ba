"""Encryption of secrets at rest (router and PPPoE passwords, secret plugin settings).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``. The key comes from
``ISP_SECRET_KEY``; when unset, one is generated into ``ISP_DATA_DIR/secret.key`` on first
start (mode 0600). Several instances must share the same ``ISP_SECRET_KEY``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from isp.config import Settings
from isp.errors import ConfigError, ISPError

KEY_FILE = "secret.key"
MIN_PASSPHRASE = 32


class SecretBox:
    """Encrypts and decrypts short secrets; ciphertext is ASCII, fit for a text column."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(_fernet_key(key))

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
