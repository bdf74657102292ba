"""``manifest.json``: what a plugin declares about itself, validated before its code runs.

Reading a manifest never imports plugin code, so a broken plugin is described (name,
version, the reason it cannot load) without running anything it ships. Every error
names the file and the field, e.g. ``plugins/foo/manifest.json: version: 'x' is not a
semantic version``, so an operator knows what to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Final

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from isp.errors import PluginInvalid
from isp.vendors import Vendor

MANIFEST_FILE: Final = "manifest.json"
MAX_HOOK_TIMEOUT: Final = 3600.0

# A plugin name is also a Python module name (isp_plugins.<name>) and a PluginRecord key.
SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EVENT = re.compile(r"^[a-z][a-z0-9_.]{0,99}$")
# semver.org's own regular expression (MAJOR.MINOR.PATCH[-pre][+build]).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

Timeout = Annotated[float, Field(gt=0, le=MAX_HOOK_TIMEOUT)]


def check_event(value: object) -> str:
    """The event-name rule, for manifests, decorators and declared events alike."""
    if not isinstance(value, str) or not EVENT.match(value):
        raise ValueError(f"{value!r} is not an event name (lowercase, digits, '_', '.')")
    return value


def check_timeout(value: float) -> float:
    """The timeout bounds, for ``ISP_HOOK_TIMEOUT``, manifests and decorators alike."""
    if isinstance(value, bool) or not 0 < value <= MAX_HOOK_TIMEOUT:
        raise ValueError(f"hook timeout must be > 0 and <= {MAX_HOOK_TIMEOUT:g} s, got {value!r}")
    return float(value)


def resolve_timeout(decorator: float | None, manifest: float | None) -> float | None:
    """Timeout precedence: the decorator's, else the manifest's, else None, which means
    ``ISP_HOOK_TIMEOUT`` (the registry's default, resolved when dispatch tables are built)."""
    return decorator or manifest


def check_slug(value: str, what: str = "name") -> str:
    if not SLUG.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what}: lowercase letters, digits and '_', "
            "starting with a letter, at most 64 characters"
        )
    return value


def check_specifier(value: str) -> str:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a version specifier (e.g. '>=0.1,<1')") from None
    return value


class HookSpec(BaseModel):
    """One event the plugin hooks into; ``timeout`` overrides ISP_HOOK_TIMEOUT for it.

    ``critical=False`` makes a failure of this hook recorded and logged without
    aborting the workflow. ``after_commit=True`` declares an after-commit hook
    (``@registry.after_commit``): run through the outbox once the workflow committed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    timeout: Timeout | None = None
    critical: bool = True
    after_commit: bool = False

    @field_validator("name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        return check_event(value)


class Permissions(BaseModel):
    """What a sandboxed plugin asks for beyond its sandbox; the operator grants it at
    install (``POST /plugins/upload?grant=network,secrets``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    network: bool = False
    secrets: bool = False

    def asked(self) -> tuple[str, ...]:
        """The names of the permissions asked for, in a fixed order."""
        return tuple(name for name in PERMISSIONS if getattr(self, name))


PERMISSIONS: Final = ("network", "secrets")


class Manifest(BaseModel):
    """The contents of ``plugins/<name>/manifest.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    description: str
    author: str = ""
    hooks: tuple[HookSpec, ...] = ()
    events: tuple[str, ...] = ()
    requires_isp: str | None = None
    requires: dict[str, str] = Field(default_factory=dict)
    vendors: tuple[str, ...] = ()
    """The device vendors this plugin's hooks drive (values of ``isp.vendors.Vendor``)."""
    permissions: Permissions = Permissions()
    """What it asks for in the sandbox: ``network``, ``secrets`` (granted at install)."""

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        return check_slug(value)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
        return value

    @field_validator("hooks", mode="before")
    @classmethod
    def _hook_names(cls, value: Any) -> Any:
        """Accept plain event names as shorthand for ``{"name": ...}``."""
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("hooks")
    @classmethod
    def _unique_hooks(cls, value: tuple[HookSpec, ...]) -> tuple[HookSpec, ...]:
        seen: set[tuple[str, bool]] = set()
        for spec in value:
            if (spec.name, spec.after_commit) in seen:
                phase = " (after_commit)" if spec.after_commit else ""
                raise ValueError(f"hook {spec.name!r}{phase} is declared twice")
            seen.add((spec.name, spec.after_commit))
        return value

    @field_validator("events")
    @classmethod
    def _event_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_event(name)
        return value

    @field_validator("vendors")
    @classmethod
    def _vendor_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = [vendor.value for vendor in Vendor]
        for name in value:
            if name not in known:
                raise ValueError(f"{name!r} is not a known vendor; known: {', '.join(known)}")
        if len(set(value)) != len(value):
            raise ValueError("a vendor is listed twice")
        return value

    @field_validator("requires_isp")
    @classmethod
    def _isp_specifier(cls, value: str | None) -> str | None:
        return None if value is None else check_specifier(value)

    @field_validator("requires")
    @classmethod
    def _requirements(cls, value: dict[str, str]) -> dict[str, str]:
        for name, spec in value.items():
            check_slug(name, "plugin name")
            check_specifier(spec)
        return value

    @property
    def hook_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.hooks)

    def hook(self, event: str, *, after_commit: bool = False) -> HookSpec | None:
        return next(
            (s for s in self.hooks if s.name == event and s.after_commit == after_commit), None
        )

    def isp_incompatibility(self, isp_version: str) -> str | None:
        """Why this ISP version cannot run the plugin, or None when it can."""
        if self.requires_isp is None:
            return None
        if SpecifierSet(self.requires_isp).contains(Version(isp_version), prereleases=True):
            return None
        return (
            f"requires_isp: the plugin needs ISP {self.requires_isp} but this is "
            f"ISP {isp_version}; install a plugin version built for ISP {isp_version}"
        )


def read_manifest(folder: Path, label: str | None = None) -> Manifest:
    """Read and validate ``folder/manifest.json`` (blocking: call via a thread from async code).

    ``label`` is how the file is named in errors (default ``<parent>/<name>/manifest.json``).
    The manifest's ``name`` must equal the folder name.
    """
    label = label or f"{folder.parent.name}/{folder.name}/{MANIFEST_FILE}"
    try:
        raw = (folder / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise _invalid(folder.name, label, "file not found; every plugin needs one") from None
    except OSError as exc:
        raise _invalid(folder.name, label, f"cannot be read: {exc}") from exc
    return parse_manifest(raw, label, folder=folder.name)


def parse_manifest(raw: bytes, label: str, *, folder: str | None = None) -> Manifest:
    """The one manifest parser, for a file on disk and an entry of a zip alike.

    UTF-8 with or without a byte-order mark; a key repeated in one object is refused
    (``json`` would silently keep the last one). ``folder``, when the plugin sits in a
    folder, must equal the manifest's ``name``. Raises ``PluginInvalid`` naming ``label``
    and the field.
    """
    plugin = folder or ""
    try:
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        why = f"is not UTF-8 text (bad byte at offset {exc.start})"
        raise _invalid(plugin, label, why) from exc
    except json.JSONDecodeError as exc:
        why = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise _invalid(plugin, label, why, line=exc.lineno, col=exc.colno) from exc
    except (ValueError, RecursionError) as exc:  # a repeated key; absurdly deep nesting
        raise _invalid(plugin, label, f"not usable JSON: {exc}") from exc
    if not isinstance(data, dict):
        kind = {"list": "an array", "str": "a string"}.get(type(data).__name__, "a scalar")
        raise _invalid(plugin, label, f"must be a JSON object ({{...}}), not {kind}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(plugin, label, exc) from exc
    if folder is not None and manifest.name != folder:
        why = f"{manifest.name!r} does not match the folder name {folder!r}; rename one"
        raise _invalid(folder, label, why, loc=("name",))
    return manifest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _from_validation(plugin: str, label: str, exc: ValidationError) -> PluginInvalid:
    errors: list[dict[str, Any]] = []
    messages: list[str] = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            msg = "missing (required field)"
        elif error["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling)"
        messages.append(f"{'.'.join(loc) or '(root)'}: {msg}")
        errors.append({"loc": ["manifest.json", *loc], "msg": msg})
    return PluginInvalid(f"{label}: " + "; ".join(messages), errors=errors, **_owner(plugin))


def _invalid(
    plugin: str, label: str, msg: str, loc: tuple[str, ...] = (), **more: Any
) -> PluginInvalid:
    where = f"{'.'.join(loc)}: " if loc else ""
    return PluginInvalid(
        f"{label}: {where}{msg}",
        errors=[{"loc": ["manifest.json", *loc], "msg": msg, **more}],
        **_owner(plugin),
    )


def _owner(plugin: str) -> dict[str, Any]:
    """``plugin`` for the problem, when known (a zip's root-level manifest has no folder)."""
    return {"plugin": plugin} if plugin else {}
