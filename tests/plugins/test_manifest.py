"""manifest.json: validated before any plugin code runs; errors name file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isp.errors import PluginInvalid
from isp.plugins.manifest import HookSpec, Manifest, read_manifest

VALID: dict[str, Any] = {
    "name": "radius",
    "version": "2.1.0-rc.1+build.7",
    "description": "Pushes PPPoE accounts to FreeRADIUS.",
    "author": "NOC team",
    "hooks": ["service_provision", {"name": "service_suspend", "timeout": 3}],
    "requires_isp": ">=0.1,<1",
    "requires": {"mikrotik": ">=1.0,<2"},
}


def write(tmp_path: Path, data: object, folder: str = "radius") -> Path:
    path = tmp_path / "plugins" / folder
    path.mkdir(parents=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (path / "manifest.json").write_text(text)
    return path


def error_of(tmp_path: Path, data: object, folder: str = "radius") -> PluginInvalid:
    with pytest.raises(PluginInvalid) as caught:
        read_manifest(write(tmp_path, data, folder))
    return caught.value


def test_valid_manifest_normalises_hook_names_to_specs(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path, VALID))
    assert manifest.hooks == (
        HookSpec(name="service_provision"),
        HookSpec(name="service_suspend", timeout=3),
    )
    assert manifest.hook_names == ("service_provision", "service_suspend")
    assert manifest.requires == {"mikrotik": ">=1.0,<2"}
    assert all(spec.critical for spec in manifest.hooks)


def test_error_names_file_field_and_value(tmp_path: Path) -> None:
    error = error_of(tmp_path, VALID | {"version": "x"})
    assert error.detail == (
        "plugins/radius/manifest.json: version: 'x' is not a semantic version "
        "(MAJOR.MINOR.PATCH, e.g. 1.2.0)"
    )
    assert error.status_code == 422
    assert error.extra["errors"][0]["loc"] == ["manifest.json", "version"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": "1.0"}, "version: '1.0' is not a semantic version"),
        ({"description": None}, "description: Input should be a valid string"),
        ({"hookz": []}, "hookz: unknown field"),
        ({"hooks": [{"name": "service_provision", "timeout": 0}]},
         "hooks.0.timeout: Input should be greater than 0"),
        ({"hooks": ["service_provision", "service_provision"]},
         "hooks: hook 'service_provision' is declared twice"),
        ({"hooks": ["Service Provision"]}, "is not an event name"),
        ({"requires_isp": ">=banana"}, "requires_isp: '>=banana' is not a version specifier"),
        ({"requires": {"mikrotik": "~~1"}}, "requires: '~~1' is not a version specifier"),
        ({"requires": {"Mikro-Tik": ">=1"}}, "'Mikro-Tik' is not a valid plugin name"),
        ({"name": "other"}, "name: 'other' does not match the folder name 'radius'"),
    ],
)
def test_invalid_field_is_reported(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(tmp_path, VALID | change).detail


def test_missing_field_is_reported(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "description"}
    assert "manifest.json: description: missing (required field)" in error_of(tmp_path, data).detail


def test_bad_json_reports_line_and_column(tmp_path: Path) -> None:
    detail = error_of(tmp_path, '{"name": "radius",\n  "version": }').detail
    assert detail.startswith("plugins/radius/manifest.json: invalid JSON at line 2 column 14")


def test_manifest_must_be_an_object(tmp_path: Path) -> None:
    assert "must be a JSON object" in error_of(tmp_path, "[1, 2]").detail


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "radius"
    folder.mkdir(parents=True)
    with pytest.raises(PluginInvalid, match="manifest.json: file not found"):
        read_manifest(folder)


def test_requires_isp_is_checked_against_the_running_version() -> None:
    manifest = Manifest.model_validate(VALID | {"name": "radius"})
    assert manifest.isp_incompatibility("0.1.0") is None
    assert manifest.isp_incompatibility("1.0.0") == (
        "requires_isp: the plugin needs ISP >=0.1,<1 but this is ISP 1.0.0; "
        "install a plugin version built for ISP 1.0.0"
    )


def test_non_critical_hook_is_declared_in_the_manifest() -> None:
    manifest = Manifest.model_validate(
        VALID | {"hooks": [{"name": "customer_created", "critical": False}]}
    )
    assert manifest.hook("customer_created") == HookSpec(name="customer_created", critical=False)


# --- one parser for a folder and a zip ---------------------------------------------


def _zip_manifest(raw: bytes) -> Manifest:
    from isp.plugins.archive import inspect_zip
    from tests.plugins.builders import make_zip

    archive = inspect_zip(
        make_zip([("radius/manifest.json", raw), ("radius/__init__.py", b"")]), max_size=1 << 20
    )
    return archive.manifest


def _disk_manifest(tmp_path: Path, raw: bytes) -> Manifest:
    folder = tmp_path / "plugins" / "radius"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_bytes(raw)
    return read_manifest(folder)


@pytest.mark.parametrize("where", ["disk", "zip"])
def test_manifest_with_a_utf8_bom_is_read_on_disk_and_in_a_zip(tmp_path: Path, where: str) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(VALID).encode()
    manifest = _disk_manifest(tmp_path, raw) if where == "disk" else _zip_manifest(raw)
    assert (manifest.name, manifest.version) == ("radius", VALID["version"])


@pytest.mark.parametrize("where", ["disk", "zip"])
def test_duplicate_key_is_refused_on_disk_and_in_a_zip(tmp_path: Path, where: str) -> None:
    raw = json.dumps(VALID).removesuffix("}").encode() + b', "version": "9.9.9"}'
    with pytest.raises(PluginInvalid) as caught:
        _disk_manifest(tmp_path, raw) if where == "disk" else _zip_manifest(raw)
    assert caught.value.detail == (
        "radius/manifest.json: not usable JSON: key 'version' appears twice in one object"
        if where == "zip"
        else "plugins/radius/manifest.json: not usable JSON: key 'version' appears twice "
        "in one object"
    )
    assert caught.value.extra["errors"][0]["loc"] == ["manifest.json"]
