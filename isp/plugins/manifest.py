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
    aborting the workflow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    timeout: Timeout | None = None
    critical: bool = True

    @field_validator("name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        if not EVENT.match(value):
            raise ValueError(f"{value!r} is not an event name (lowercase, digits, '_', '.')")
        return value


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
        seen: set[str] = set()
        for spec in value:
            if spec.name in seen:
                raise ValueError(f"hook {spec.name!r} is declared twice")
            seen.add(spec.name)
        return value

    @field_validator("events")
    @classmethod
    def _event_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not EVENT.match(name):
                raise ValueError(f"{name!r} is not an event name (lowercase, digits, '_', '.')")
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

    def hook(self, event: str) -> HookSpec | None:
        return next((spec for spec in self.hooks if spec.name == event), None)

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
    path = folder / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _invalid(folder.name, label, "file not found; every plugin needs one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(folder.name, label, f"cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise _invalid(folder.name, label, why) from exc
    if not isinstance(data, dict):
        raise _invalid(folder.name, label, "must be a JSON object")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(folder.name, label, exc) from exc
    if manifest.name != folder.name:
        why = f"{manifest.name!r} does not match the folder name {folder.name!r}; rename one"
        raise _invalid(folder.name, label, why, loc=("name",))
    return manifest


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
    return PluginInvalid(f"{label}: " + "; ".join(messages), plugin=plugin, errors=errors)


def _invalid(plugin: str, label: str, msg: str, loc: tuple[str, ...] = ()) -> PluginInvalid:
    where = f"{'.'.join(loc)}: " if loc else ""
    return PluginInvalid(
        f"{label}: {where}{msg}",
        plugin=plugin,
        errors=[{"loc": ["manifest.json", *loc], "msg": msg}],
    )
