"""Plugin signatures: the signature file, verification and the trust policy.

Keys (``isp plugins keygen``, ``ISP_PLUGIN_TRUSTED_KEYS``) are :mod:`isp.plugins.keys`'s.
``isp plugins sign`` writes :data:`SIGNATURE_FILE` at the plugin's root: a JSON object
``{"format", "plugin", "version", "key_id", "public_key", "files", "signature"}`` where
``files`` maps every file of the plugin (POSIX path below its root; the signature file
itself, bytecode, ``__pycache__``, ``__MACOSX``, ``.DS_Store`` and the install marker
left out, as :func:`~isp.plugins.archive.is_ignored` says) to its SHA-256. ``signature``
is the Ed25519 signature of ``b"isp-plugin-signature-v1\\n"`` followed by the canonical
JSON (sorted keys, no whitespace, ASCII only) of every other field, so verification is
deterministic whatever the file's own formatting.

:func:`verify` gives one :class:`Verdict` per plugin: ``signed`` (by a trusted key),
``unsigned`` (no signature file, or a valid one by a key this deployment does not trust:
``signer`` shows it), ``invalid`` (malformed, or the signature does not verify against
the key it names) or ``modified`` (a file differs from, is missing from, or was added
to the signed list). :func:`isolation` and :func:`admit_upload` turn a verdict into
where the plugin runs and whether an upload is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from isp.config import Settings
from isp.errors import PluginInvalid, ValidationFailed
from isp.plugins.archive import MANIFEST, in_thread, inspect_zip, is_ignored, os_errors
from isp.plugins.keys import TrustedKeys, decode_public_key, key_id, raw_bytes, read_private_key
from isp.plugins.manifest import Manifest, read_manifest

log = logging.getLogger("isp.plugins.trust")

SIGNATURE_FILE: Final = "SIGNATURE.json"
FORMAT: Final = "isp-plugin-signature-v1"
_TAG: Final = FORMAT.encode() + b"\n"
_MAX_SIGNATURE_FILE: Final = 8 * 1024 * 1024
_SIGN_LIMIT: Final = 1024 * 1024 * 1024  # what `sign` reads; the server has its own limit

Status = Literal["signed", "unsigned", "invalid", "modified"]
Isolation = Literal["in_process", "sandbox"]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a plugin's signature says; ``path`` names the file that differs or is bad."""

    status: Status
    signer: str | None = None  # key id named by a signature that verifies
    detail: str | None = None  # why it is invalid or modified
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.status, "signer": self.signer}


UNSIGNED: Final = Verdict("unsigned")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    format: Literal["isp-plugin-signature-v1"]
    plugin: str
    version: str
    key_id: str
    public_key: str
    files: dict[str, Sha256Hex]
    signature: str


# --- the signature file --------------------------------------------------------------


def _canonical(payload: Mapping[str, Any]) -> bytes:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _TAG + text.encode("ascii")


def _digests(files: Mapping[str, bytes | None]) -> dict[str, str | None]:
    """SHA-256 of every covered file; None for what is not a regular file (a link)."""
    return {
        path: None if content is None else hashlib.sha256(content).hexdigest()
        for path, content in files.items()
        if path != SIGNATURE_FILE and not is_ignored(path)
    }


def signature_file(
    files: Mapping[str, bytes | None], manifest: Manifest, private: Ed25519PrivateKey
) -> bytes:
    """The signature file's bytes for ``files`` (path -> content, below the plugin root)."""
    digests = _digests(files)
    links = sorted(path for path, digest in digests.items() if digest is None)
    if links:
        raise ValidationFailed(
            f"{links[0]} is not a regular file; a plugin may contain only files and folders",
            errors=[{"loc": ["file", links[0]], "msg": "not a regular file"}],
        )
    public = private.public_key()
    payload: dict[str, Any] = {
        "format": FORMAT,
        "plugin": manifest.name,
        "version": manifest.version,
        "key_id": key_id(public),
        "public_key": base64.b64encode(raw_bytes(public)).decode("ascii"),
        "files": dict(sorted(digests.items())),
    }
    payload["signature"] = base64.b64encode(private.sign(_canonical(payload))).decode("ascii")
    return (json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def verify(
    files: Mapping[str, bytes | None], manifest: Manifest | None, trusted: TrustedKeys
) -> Verdict:
    """The verdict on a plugin's files (path -> content; None for a non-regular file).

    One pass: every covered file is hashed once. The signature is checked first (a list
    that does not verify says nothing about the files), then the files against it.
    """
    raw = files.get(SIGNATURE_FILE)
    if SIGNATURE_FILE not in files:
        return UNSIGNED
    if raw is None or len(raw) > _MAX_SIGNATURE_FILE:
        return _invalid("is not a regular file of at most 8 MiB")
    try:
        document = _Document.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        return _invalid(f"{where}: {first['msg']}")
    try:
        embedded = decode_public_key(document.public_key)
    except ValueError as exc:
        return _invalid(f"public_key: {exc}")
    if key_id(embedded) != document.key_id:
        return _invalid(f"key_id {document.key_id!r} is not the id of the key it carries")
    public = trusted.get(document.key_id, embedded)
    try:
        signature = base64.b64decode(document.signature, validate=True)
        public.verify(signature, _canonical(document.model_dump(exclude={"signature"})))
    except (binascii.Error, ValueError, InvalidSignature):
        return _invalid(f"the signature does not verify against key {document.key_id}")
    if (why := _differs(document.files, _digests(files))) is not None:
        path, detail = why
        return Verdict("modified", document.key_id, f"{path}: {detail}", path)
    if manifest is not None and (document.plugin, document.version) != (
        manifest.name,
        manifest.version,
    ):
        return _invalid(
            f"signed for {document.plugin} {document.version}, but {MANIFEST} says "
            f"{manifest.name} {manifest.version}"
        )
    status: Status = "signed" if document.key_id in trusted else "unsigned"
    return Verdict(status, document.key_id)


def _invalid(why: str) -> Verdict:
    return Verdict("invalid", None, f"{SIGNATURE_FILE}: {why}", SIGNATURE_FILE)


def _differs(signed: Mapping[str, str], actual: Mapping[str, str | None]) -> tuple[str, str] | None:
    """The first file (by path) that is not as signed, and how."""
    for path in sorted(set(signed) | set(actual)):
        if path not in actual:
            return path, "is in the signed list but missing from the plugin"
        if path not in signed:
            return path, "is not in the signed list (added after signing)"
        if actual[path] is None:
            return path, "is not a regular file"
        if actual[path] != signed[path]:
            return path, "differs from the signed file (its SHA-256 does not match)"
    return None


# --- folders and zips ----------------------------------------------------------------


def folder_files(folder: Path) -> dict[str, bytes | None]:
    """Every file below ``folder``, links not followed (their content is None)."""
    found: dict[str, bytes | None] = {}
    pending = [(folder, "")]
    with os_errors("read plugin files under", folder):
        while pending:
            current, rel = pending.pop()
            with os.scandir(current) as listing:
                for entry in listing:
                    path = f"{rel}{entry.name}"
                    if is_ignored(path):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((Path(entry.path), f"{path}/"))
                    elif entry.is_file(follow_symlinks=False):
                        found[path] = Path(entry.path).read_bytes()
                    else:
                        found[path] = None
    return found


def verify_folder(folder: Path, manifest: Manifest | None, trusted: TrustedKeys) -> Verdict:
    """:func:`verify` on a plugin folder; unsigned at once when it has no signature file."""
    signature = folder / SIGNATURE_FILE
    if not (signature.exists() or signature.is_symlink()):
        return UNSIGNED
    return verify(folder_files(folder), manifest, trusted)


verify_async = in_thread(verify)
verify_folder_async = in_thread(verify_folder)


def sign(target: Path, key: Path) -> str:
    """Add (or replace) the signature file of a plugin folder or zip; return the key id."""
    private = read_private_key(key)
    if target.is_dir():
        manifest = read_manifest(target, f"{target.name}/{MANIFEST}")
        document = signature_file(folder_files(target), manifest, private)
        with os_errors("write the signature into", target):
            _replace(target / SIGNATURE_FILE, document)
    else:
        with os_errors("read", target):
            data = target.read_bytes()
        signed = sign_zip(data, private)
        with os_errors("write", target):
            _replace(target, signed)
    return key_id(private.public_key())


def sign_zip(data: bytes, private: Ed25519PrivateKey) -> bytes:
    """The plugin zip ``data`` with its signature file added (an old one replaced).

    Entries are copied as they are; the result is checked as an upload would be.
    """
    archive = inspect_zip(data, max_size=_SIGN_LIMIT)
    prefix = f"{archive.root_prefix}/" if archive.root_prefix else ""
    document = signature_file(archive.files, archive.manifest, private)
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for info in source.infolist():
            if info.orig_filename != f"{prefix}{SIGNATURE_FILE}":
                out.writestr(info, source.read(info))
        out.writestr(f"{prefix}{SIGNATURE_FILE}", document)
    signed = buffer.getvalue()
    inspect_zip(signed, max_size=_SIGN_LIMIT)
    return signed


def _replace(path: Path, content: bytes) -> None:
    """Write ``content`` next to ``path`` and rename it over: never half a file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- policy --------------------------------------------------------------------------


def admit_upload(verdict: Verdict, settings: Settings, name: str, prefix: str = "") -> None:
    """Refuse an upload whose signature says it must not run (``PluginInvalid``, 422).

    ``invalid`` and ``modified`` are always refused, naming the file; ``unsigned`` is
    refused when ``ISP_PLUGIN_UNSIGNED=refuse``.
    """
    if verdict.status in ("invalid", "modified"):
        where = f"{prefix}{verdict.path}" if verdict.path else f"{prefix}{SIGNATURE_FILE}"
        raise PluginInvalid(
            f"{name}: the plugin's signature is {verdict.status}: {prefix}{verdict.detail}",
            plugin=name,
            signature=verdict.status,
            signer=verdict.signer,
            errors=[{"loc": ["file", where], "msg": verdict.detail}],
        )
    if verdict.status == "unsigned" and settings.plugin_unsigned == "refuse":
        by = f" (signed by key {verdict.signer}, which is not trusted)" if verdict.signer else ""
        raise PluginInvalid(
            f"{name}: the plugin is not signed by a trusted key{by}, and "
            "ISP_PLUGIN_UNSIGNED=refuse; sign it with a key listed in ISP_PLUGIN_TRUSTED_KEYS",
            plugin=name,
            signature=verdict.status,
            signer=verdict.signer,
            errors=[{"loc": ["file", f"{prefix}{SIGNATURE_FILE}"], "msg": "not trusted"}],
        )


def isolation(name: str, origin: str, verdict: Verdict, settings: Settings) -> Isolation:
    """Where a plugin runs: ``in_process`` or ``sandbox``.

    Signed by a trusted key: in process. A local folder (``origin == "local"``): in
    process, unless ``ISP_PLUGIN_SANDBOX_LOCAL=true`` and it is not signed by a trusted
    key. Any other uploaded plugin: as ``ISP_PLUGIN_UNSIGNED`` says (``refuse`` was
    refused at upload by :func:`admit_upload`; ``allow``: in process; ``sandbox``: in
    the sandbox). A sandboxed plugin is never imported by the service: it runs in a
    worker process under bubblewrap (:mod:`isp.plugins.sandboxed`), and when that cannot
    start (no bubblewrap) the plugin is not loaded at all, never run in process instead.
    """
    if verdict.status == "signed":
        return "in_process"
    if origin == "local":
        wanted = settings.plugin_sandbox_local
    else:
        wanted = settings.plugin_unsigned == "sandbox"
    if wanted:
        log.info(
            "plugin %s is %s: it runs in the sandbox",
            name,
            verdict.status,
            extra={"plugin": name, "signature": verdict.status, "signer": verdict.signer},
        )
        return "sandbox"
    return "in_process"
