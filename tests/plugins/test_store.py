"""Plugin zips: hostile archives refused, files extracted atomically, objects verified."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from isp.errors import ISPError, NotFound, PayloadTooLarge, PluginInvalid, ValidationFailed
from isp.plugins.archive import (
    PluginArchive,
    file_digest,
    inspect_zip,
    inspect_zip_async,
    tree_digest,
    tree_digest_async,
)
from isp.plugins.store import (
    ChecksumMismatch,
    discard,
    discard_async,
    download,
    extract_atomically,
    extract_atomically_async,
    object_key,
    promote,
    promote_async,
    remove_plugin_dir,
    rollback,
    rollback_async,
    stage,
    stage_async,
    upload,
)
from isp.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.plugins.builders import DEMO_MANIFEST, demo_zip, entry, make_zip, plugin_entries
from tests.s3server import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

MAX = 16 * 1024 * 1024
BUCKET = "plugins"


def inspect(data: bytes, **limits: Any) -> PluginArchive:
    return inspect_zip(data, max_size=limits.pop("max_size", MAX), **limits)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path below ``folder`` with its mode and bytes (None for folders)."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        found[path.relative_to(folder).as_posix()] = (
            mode,
            path.read_bytes() if stat.S_ISREG(mode) else None,
        )
    return found


# --- hostile and broken zips --------------------------------------------------------


def _corrupt_central_directory() -> bytes:
    data = demo_zip()
    return data.replace(b"PK\x01\x02", b"PK\x01\x09", 1)


def _with(*extra: tuple[zipfile.ZipInfo | str, bytes]) -> Callable[[], bytes]:
    return lambda: make_zip([*plugin_entries(), *extra])


@dataclass(frozen=True)
class Hostile:
    build: Callable[[], bytes]
    message: str  # must appear in ``detail``
    loc: list[str]  # ``errors[0].loc``
    error: type[ISPError] = ValidationFailed
    limits: tuple[tuple[str, int], ...] = ()


HOSTILE: dict[str, Hostile] = {
    "not a zip": Hostile(lambda: b"%PDF-1.7 not a zip at all", "not a zip file", ["file"]),
    "truncated zip": Hostile(
        lambda: demo_zip()[: len(demo_zip()) // 2], "not a readable zip", ["file"]
    ),
    "corrupt central directory": Hostile(
        _corrupt_central_directory, "not a readable zip", ["file"]
    ),
    "empty zip": Hostile(lambda: make_zip([]), "the zip is empty", ["file"]),
    "over max size": Hostile(
        demo_zip, "the limit is 100 bytes", ["file"], PayloadTooLarge, (("max_size", 100),)
    ),
    "too many entries": Hostile(
        lambda: make_zip([*plugin_entries(), *((f"demo/f{i}.txt", b"") for i in range(1000))]),
        "at most 1000 are allowed",
        ["file"],
    ),
    "zip bomb by ratio": Hostile(
        _with(("demo/data.bin", bytes(10 * 1024 * 1024))),
        "likely zip bomb",
        ["file", "demo/data.bin"],
    ),
    "total uncompressed over limit": Hostile(
        _with(("demo/a.bin", os.urandom(3000)), ("demo/b.bin", os.urandom(3000))),
        "the limit is 5000 bytes",
        ["file"],
        limits=(("max_uncompressed", 5000),),
    ),
    "declared size larger than the limit": Hostile(
        _with((entry("demo/big.bin", declared_size=100 * 1024 * 1024), b"x")),
        "would expand",
        ["file", "demo/big.bin"],
    ),
    "declared size smaller than the data": Hostile(
        _with((entry("demo/liar.bin", declared_size=10), b"A" * 50_000)),
        "is corrupt",
        ["file", "demo/liar.bin"],
    ),
    "parent traversal": Hostile(_with(("../evil.py", b"x")), "'..'", ["file", "../evil.py"]),
    "nested traversal": Hostile(
        _with(("demo/../../etc/passwd", b"root")), "'..'", ["file", "demo/../../etc/passwd"]
    ),
    "absolute path": Hostile(
        _with(("/etc/passwd", b"x")), "absolute path", ["file", "/etc/passwd"]
    ),
    "drive letter with backslash": Hostile(
        _with(("C:\\x.py", b"x")), "drive letter", ["file", "C:\\x.py"]
    ),
    "drive letter with slash": Hostile(
        _with(("C:/x.py", b"x")), "drive letter", ["file", "C:/x.py"]
    ),
    "backslash": Hostile(
        _with(("demo\\..\\evil.py", b"x")), "backslash", ["file", "demo\\..\\evil.py"]
    ),
    "NUL in name": Hostile(
        _with(("demo/evil.py\x00.txt", b"x")), "NUL", ["file", "demo/evil.py\x00.txt"]
    ),
    "control character in name": Hostile(
        _with(("demo/evil\n.py", b"x")), "control character", ["file", "demo/evil\n.py"]
    ),
    "empty segment": Hostile(_with(("demo//x.py", b"x")), "empty or '.'", ["file", "demo//x.py"]),
    "segment over 255 bytes": Hostile(
        _with((f"demo/{'é' * 128}.py", b"x")), "255 bytes", ["file", f"demo/{'é' * 128}.py"]
    ),
    "symlink": Hostile(
        _with((entry("demo/link.py", mode=stat.S_IFLNK | 0o777), b"/etc/passwd")),
        "symbolic link",
        ["file", "demo/link.py"],
    ),
    "character device": Hostile(
        _with((entry("demo/tty", mode=stat.S_IFCHR | 0o600), b"")),
        "character device",
        ["file", "demo/tty"],
    ),
    "block device": Hostile(
        _with((entry("demo/sda", mode=stat.S_IFBLK | 0o600), b"")),
        "block device",
        ["file", "demo/sda"],
    ),
    "fifo": Hostile(
        _with((entry("demo/pipe", mode=stat.S_IFIFO | 0o600), b"")), "FIFO", ["file", "demo/pipe"]
    ),
    "socket": Hostile(
        _with((entry("demo/sock", mode=stat.S_IFSOCK | 0o600), b"")),
        "socket",
        ["file", "demo/sock"],
    ),
    "duplicate name": Hostile(
        _with(("demo/__init__.py", b"import os\n")), "appears twice", ["file", "demo/__init__.py"]
    ),
    "case-insensitive duplicate": Hostile(
        _with(("demo/HOOKS/provision.py", b"x")),
        "differ only in case",
        ["file", "demo/HOOKS/provision.py"],
    ),
    "file where a folder is needed": Hostile(
        _with(("demo/README.md/evil.py", b"x")),
        "which is a file",
        ["file", "demo/README.md/evil.py"],
    ),
    "encrypted entry": Hostile(
        _with((entry("demo/secret.py", flag_bits=0x1), b"x")),
        "encrypted",
        ["file", "demo/secret.py"],
    ),
    "no manifest": Hostile(
        lambda: make_zip([("demo/__init__.py", b""), ("demo/x.py", b"")]),
        "no manifest.json",
        ["file", "demo/manifest.json"],
    ),
    "no manifest at all": Hostile(
        lambda: make_zip([("__init__.py", b"")]), "no manifest.json", ["file", "manifest.json"]
    ),
    "manifest not JSON": Hostile(
        lambda: demo_zip(manifest=b'{"name": "demo",\n "version": }'),
        "line 2 column 13",
        ["manifest.json"],
        error=PluginInvalid
    ),
    "manifest a JSON list": Hostile(
        lambda: demo_zip(manifest=b'["demo"]'), "must be a JSON object", ["manifest.json"],
        error=PluginInvalid
    ),
    "manifest not UTF-8": Hostile(
        lambda: demo_zip(manifest=b'{"name": "d\xe9mo"}'), "not UTF-8", ["manifest.json"],
        error=PluginInvalid
    ),
    "manifest with a repeated key": Hostile(
        lambda: demo_zip(manifest=b'{"name": "demo", "name": "evil"}'),
        "key 'name' appears twice",
        ["manifest.json"],
        error=PluginInvalid
    ),
    "manifest nested absurdly deep": Hostile(
        lambda: demo_zip(manifest=b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        "not usable JSON",
        ["manifest.json"],
        error=PluginInvalid
    ),
    "two top-level folders": Hostile(
        lambda: make_zip([*plugin_entries("demo/"), *plugin_entries("other/")]),
        "demo/, other/",
        ["file"],
    ),
    "one folder and loose files": Hostile(
        lambda: make_zip([*plugin_entries("demo/"), ("setup.py", b"")]),
        "one plugin folder",
        ["file"],
    ),
    "no __init__.py": Hostile(
        lambda: make_zip([e for e in plugin_entries() if e[0] != "demo/__init__.py"]),
        "no __init__.py",
        ["file", "demo/__init__.py"],
    ),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_zip_is_refused_naming_problem_and_entry(case: Hostile) -> None:
    with pytest.raises(ISPError) as caught:
        inspect(case.build(), **dict(case.limits))

    error = caught.value
    assert type(error) is case.error
    assert error.status_code == (413 if case.error is PayloadTooLarge else 422)
    assert case.message in error.detail
    assert error.extra["errors"][0]["loc"] == case.loc
    json.dumps(error.to_problem())  # renders as problem+json, odd names included


def test_too_large_names_limit_and_size() -> None:
    data = demo_zip()

    with pytest.raises(PayloadTooLarge) as caught:
        inspect(data, max_size=100)

    assert f"is {len(data)} bytes" in caught.value.detail
    assert caught.value.extra["limit"] == 100
    assert caught.value.extra["size"] == len(data)


def test_manifest_json_error_carries_line_and_column() -> None:
    with pytest.raises(ValidationFailed) as caught:
        inspect(demo_zip(manifest=b'{\n  "name": "demo",\n  oops\n}'))

    (problem,) = caught.value.extra["errors"]
    assert (problem["line"], problem["col"]) == (3, 3)
    assert caught.value.detail.startswith("demo/manifest.json: invalid JSON at line 3 column 3")


def test_manifest_field_errors_are_reported_per_field() -> None:
    manifest = {**DEMO_MANIFEST, "version": 3, "colour": "red"}

    with pytest.raises(PluginInvalid) as caught:
        inspect(demo_zip(manifest=manifest))

    locs = [problem["loc"] for problem in caught.value.extra["errors"]]
    assert locs == [["manifest.json", "version"], ["manifest.json", "colour"]]
    assert caught.value.detail.startswith("demo/manifest.json: version:")


def test_zip_folder_must_match_the_manifest_name() -> None:
    with pytest.raises(PluginInvalid, match="'demo' does not match the folder name 'other'"):
        inspect(make_zip([(p.replace("demo/", "other/", 1), c) for p, c in plugin_entries()]))


# --- valid zips ---------------------------------------------------------------------


def test_folder_layout_is_accepted() -> None:
    data = demo_zip("demo/")

    archive = inspect(data)

    assert archive.root_prefix == "demo"
    assert archive.manifest.model_dump(include={"name", "version"}) == {
        "name": "demo",
        "version": "1.0.0",
    }
    assert archive.sha256 == hashlib.sha256(data).hexdigest()
    assert archive.size == len(data)
    assert sorted(archive.files) == [
        "README.md",
        "__init__.py",
        "hooks/__init__.py",
        "hooks/provision.py",
        "manifest.json",
    ]
    assert archive.files["hooks/__init__.py"] == b""


def test_root_layout_gives_the_same_files_and_digest_as_folder_layout() -> None:
    in_folder = inspect(demo_zip("demo/"))
    at_root = inspect(make_zip([*plugin_entries(""), ("docs/usage.md", b"x")]))
    at_root_plain = inspect(demo_zip(""))

    assert at_root.root_prefix == ""
    assert "docs/usage.md" in at_root.files
    assert dict(at_root_plain.files) == dict(in_folder.files)
    assert at_root_plain.tree_sha256 == in_folder.tree_sha256 == file_digest(in_folder.files)
    assert at_root_plain.sha256 != in_folder.sha256  # different zips, same plugin


def test_macos_junk_and_bytecode_are_ignored() -> None:
    junk = [
        ("__MACOSX/demo/._manifest.json", b"\x00\x05\x16\x07"),
        ("demo/.DS_Store", b"\x00\x00\x00\x01Bud1"),
        ("demo/__pycache__/__init__.cpython-311.pyc", b"\xa7\r\r\n"),
        ("demo/hooks/stale.pyc", b"\xa7\r\r\n"),
        ("demo/hooks/old.pyo", b"\xa7\r\r\n"),
    ]

    archive = inspect(make_zip([*plugin_entries(), *junk]))

    assert archive.root_prefix == "demo"
    assert archive.tree_sha256 == inspect(demo_zip()).tree_sha256
    assert not any(".pyc" in p or ".DS_Store" in p or "MACOSX" in p for p in archive.files)
    assert sorted(archive.ignored) == sorted(name for name, _ in junk)


def test_folder_entries_and_windows_made_zips_are_accepted() -> None:
    folders = [(entry("demo/"), b""), (entry("demo/hooks/"), b"")]
    windows = [(entry(name, create_system=0, mode=0), data) for name, data in plugin_entries()]

    assert inspect(make_zip([*folders, *plugin_entries()])).files.keys() == (
        inspect(demo_zip()).files.keys()
    )
    assert inspect(make_zip(windows)).tree_sha256 == inspect(demo_zip()).tree_sha256


def test_small_very_compressible_file_is_not_taken_for_a_bomb() -> None:
    archive = inspect(make_zip([*plugin_entries(), ("demo/blank.txt", b" " * 500_000)]))

    assert archive.files["blank.txt"] == b" " * 500_000


def test_stored_bzip2_and_lzma_entries_are_accepted() -> None:
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        archive = inspect(make_zip(plugin_entries(), compression=method))
        assert archive.tree_sha256 == inspect(demo_zip()).tree_sha256


async def test_inspect_zip_async_matches_the_sync_version() -> None:
    data = demo_zip()

    assert await inspect_zip_async(data, max_size=MAX) == inspect(data)
    with pytest.raises(PayloadTooLarge):
        await inspect_zip_async(data, max_size=10)


# --- digests ------------------------------------------------------------------------


def test_file_digest_follows_the_documented_format() -> None:
    files = {"b.py": b"bee", "a/x.py": b"", "a.py": b"A"}
    expected = hashlib.sha256(b"isp-plugin-tree-v1\n")
    for path in ("a.py", "a/x.py", "b.py"):  # sorted as UTF-8 bytes: '.' < '/'
        content = files[path]
        expected.update(b"F" + path.encode() + b"\0" + str(len(content)).encode() + b"\0")
        expected.update(content)

    assert file_digest(files) == expected.hexdigest()
    assert file_digest(list(reversed(files.items()))) == expected.hexdigest()


def test_file_digest_skips_bytecode_and_editor_temp_files() -> None:
    files = {"__init__.py": b"x"}
    noisy = {
        **files,
        "__pycache__/m.cpython-311.pyc": b"1",
        "m.pyc": b"2",
        "__init__.py~": b"3",
        ".#__init__.py": b"4",
        "#__init__.py#": b"5",
        ".__init__.py.swp": b"6",
        "4913": b"",
        ".DS_Store": b"7",
    }

    assert file_digest(noisy) == file_digest(files)
    assert file_digest({**files, "m.py": b""}) != file_digest(files)


# --- extraction ---------------------------------------------------------------------


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "other").mkdir()
    (folder / "other" / "__init__.py").write_bytes(b"# another plugin, never touched\n")
    return folder


@pytest.fixture
def archive() -> PluginArchive:
    return inspect(demo_zip())


def test_stage_writes_files_in_a_dot_folder_with_safe_modes(
    archive: PluginArchive, plugins_dir: Path
) -> None:
    old_umask = os.umask(0o077)
    try:
        staged = stage(archive, plugins_dir, "demo")
    finally:
        os.umask(old_umask)

    assert staged.parent.parent == plugins_dir
    assert staged.parent.name.startswith(".staging-")
    assert staged.name == "demo"  # named as the loader expects, inside a dot folder
    files = {p.relative_to(staged).as_posix(): p for p in staged.rglob("*") if p.is_file()}
    assert {rel: p.read_bytes() for rel, p in files.items()} == dict(archive.files)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files.values()} == {0o644}
    assert stat.S_IMODE((staged / "hooks").stat().st_mode) == 0o755
    assert stat.S_IMODE(staged.stat().st_mode) == 0o755
    assert tree_digest(staged) == archive.tree_sha256


def test_promote_installs_a_new_plugin(archive: PluginArchive, plugins_dir: Path) -> None:
    staged = stage(archive, plugins_dir, "demo")

    backup = promote(staged, plugins_dir, "demo")

    assert backup is None
    assert sorted(os.listdir(plugins_dir)) == ["demo", "other"]
    assert tree_digest(plugins_dir / "demo") == archive.tree_sha256


def test_promote_then_discard_replaces_the_old_version(
    archive: PluginArchive, plugins_dir: Path
) -> None:
    older = inspect(demo_zip(manifest={**DEMO_MANIFEST, "version": "0.9.0"}))
    extract_atomically(older, plugins_dir, "demo")
    staged = stage(archive, plugins_dir, "demo")

    backup = promote(staged, plugins_dir, "demo")

    assert backup is not None
    assert backup.parent == plugins_dir
    assert backup.name.startswith(".old-demo-")
    assert json.loads((backup / "manifest.json").read_bytes())["version"] == "0.9.0"
    assert tree_digest(plugins_dir / "demo") == archive.tree_sha256
    discard(backup)
    assert sorted(os.listdir(plugins_dir)) == ["demo", "other"]


def test_rollback_restores_the_old_folder_byte_for_byte(
    archive: PluginArchive, plugins_dir: Path
) -> None:
    old = plugins_dir / "demo"
    (old / "lib").mkdir(parents=True)
    (old / "__init__.py").write_bytes(b"VERSION = 'old'\n")
    (old / "lib" / "data.bin").write_bytes(os.urandom(4096))
    (old / "run.sh").write_bytes(b"#!/bin/sh\n")
    (old / "run.sh").chmod(0o755)
    before, listing = snapshot(old), sorted(os.listdir(plugins_dir))

    backup = promote(stage(archive, plugins_dir, "demo"), plugins_dir, "demo")
    rollback(backup, plugins_dir, "demo")

    assert snapshot(old) == before
    assert sorted(os.listdir(plugins_dir)) == listing


def test_rollback_without_backup_removes_the_new_plugin(
    archive: PluginArchive, plugins_dir: Path
) -> None:
    backup = extract_atomically(archive, plugins_dir, "demo")

    rollback(backup, plugins_dir, "demo")

    assert sorted(os.listdir(plugins_dir)) == ["other"]


def test_failed_stage_leaves_nothing_behind(
    archive: PluginArchive, plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(plugins_dir)
    calls = 0

    def disk_full(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ISPError, match="No space left on device") as caught:
        stage(archive, plugins_dir, "demo")
    monkeypatch.undo()

    assert caught.value.status_code == 500
    assert snapshot(plugins_dir) == before


def test_failed_promote_keeps_the_old_version_in_place(
    archive: PluginArchive, plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extract_atomically(archive, plugins_dir, "demo")
    before = snapshot(plugins_dir)
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(src).parent.name.startswith(".staging-"):
            raise OSError(18, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    upgrade = inspect(demo_zip(manifest={**DEMO_MANIFEST, "version": "2.0.0"}))
    with pytest.raises(ISPError, match="cross-device"):
        extract_atomically(upgrade, plugins_dir, "demo")
    monkeypatch.undo()

    assert snapshot(plugins_dir) == before


def test_stage_refuses_unsafe_paths_even_in_a_hand_made_archive(
    archive: PluginArchive, plugins_dir: Path, tmp_path: Path
) -> None:
    forged = PluginArchive(**{**_fields(archive), "files": {"ok.py": b"", "../escape.py": b"x"}})
    before = snapshot(tmp_path)

    with pytest.raises(ValidationFailed, match="'..'"):
        stage(forged, plugins_dir, "demo")

    assert snapshot(tmp_path) == before


def test_stage_never_extracts_bytecode(archive: PluginArchive, plugins_dir: Path) -> None:
    forged = PluginArchive(**{**_fields(archive), "files": {**archive.files, "x.pyc": b"\xa7"}})

    staged = stage(forged, plugins_dir, "demo")

    assert not (staged / "x.pyc").exists()
    assert tree_digest(staged) == archive.tree_sha256


def _fields(archive: PluginArchive) -> dict[str, Any]:
    return {name: getattr(archive, name) for name in PluginArchive.__dataclass_fields__}


@pytest.mark.parametrize("name", ["", "../demo", "a/b", ".hidden", "-rf", "x" * 101, "dé"])
def test_unsafe_plugin_names_are_refused(
    archive: PluginArchive, plugins_dir: Path, name: str
) -> None:
    before = snapshot(plugins_dir)

    for attempt in (
        lambda: stage(archive, plugins_dir, name),
        lambda: extract_atomically(archive, plugins_dir, name),
        lambda: remove_plugin_dir(plugins_dir, name),
        lambda: object_key(name, "1.0.0", "0" * 64),
    ):
        with pytest.raises(ValidationFailed) as caught:
            attempt()
        assert caught.value.extra["errors"][0]["loc"] == ["name"]
    assert snapshot(plugins_dir) == before


def test_promote_refuses_a_folder_staged_elsewhere(
    archive: PluginArchive, plugins_dir: Path, tmp_path: Path
) -> None:
    elsewhere = stage(archive, tmp_path / "elsewhere", "demo")

    with pytest.raises(ISPError, match="is not staged in"):
        promote(elsewhere, plugins_dir, "demo")

    assert not (plugins_dir / "demo").exists()


def test_remove_plugin_dir(archive: PluginArchive, plugins_dir: Path, tmp_path: Path) -> None:
    extract_atomically(archive, plugins_dir, "demo")
    outside = tmp_path / "dev-checkout"
    outside.mkdir()
    (outside / "__init__.py").write_bytes(b"keep me")
    (plugins_dir / "linked").symlink_to(outside, target_is_directory=True)

    assert remove_plugin_dir(plugins_dir, "demo") is True
    assert remove_plugin_dir(plugins_dir, "demo") is False
    assert remove_plugin_dir(plugins_dir, "linked") is True

    assert sorted(os.listdir(plugins_dir)) == ["other"]
    assert (outside / "__init__.py").read_bytes() == b"keep me"


async def test_async_install_flow_with_rollback(archive: PluginArchive, plugins_dir: Path) -> None:
    first = await extract_atomically_async(archive, plugins_dir, "demo")
    installed = snapshot(plugins_dir / "demo")
    upgrade = await inspect_zip_async(
        demo_zip(manifest={**DEMO_MANIFEST, "version": "2.0.0"}), max_size=MAX
    )

    staged = await stage_async(upgrade, plugins_dir, "demo")
    backup = await promote_async(staged, plugins_dir, "demo")
    assert await tree_digest_async(plugins_dir / "demo") == upgrade.tree_sha256
    await rollback_async(backup, plugins_dir, "demo")
    await discard_async(None)

    assert first is None
    assert snapshot(plugins_dir / "demo") == installed
    assert sorted(os.listdir(plugins_dir)) == ["demo", "other"]


def test_tree_digest_detects_tampering(archive: PluginArchive, plugins_dir: Path) -> None:
    extract_atomically(archive, plugins_dir, "demo")
    folder = plugins_dir / "demo"
    clean = tree_digest(folder)

    # What Python and editors leave behind is not tampering.
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\xa7")
    (folder / "hooks" / "provision.py~").write_bytes(b"backup")
    (folder / ".hooks.swp").write_bytes(b"swap")
    assert tree_digest(folder) == clean == archive.tree_sha256

    tampered: dict[str, Callable[[], object]] = {
        "changed byte": lambda: (folder / "hooks" / "provision.py").write_bytes(b"import os\n"),
        "added file": lambda: (folder / "hooks" / "evil.py").write_bytes(b""),
        "renamed file": lambda: (folder / "README.md").rename(folder / "READ.md"),
        "planted link": lambda: (folder / "x.py").symlink_to("/etc/passwd"),
    }
    for what, tamper in tampered.items():
        extract_atomically(archive, plugins_dir, "demo")
        tamper()
        assert tree_digest(folder) != clean, what


def test_tree_digest_of_a_missing_folder_is_an_isp_error(tmp_path: Path) -> None:
    with pytest.raises(ISPError, match="could not read plugin files"):
        tree_digest(tmp_path / "absent")


# --- object store -------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    backend: ObjectStore
    if request.param == "local":
        backend = LocalObjectStore(tmp_path / "objects")
    else:
        endpoint = request.getfixturevalue("s3_reset")  # so local runs never start moto
        backend = S3ObjectStore(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    await backend.ensure_buckets(BUCKET)
    yield backend
    await backend.close()


async def test_upload_then_download_round_trips(store: ObjectStore) -> None:
    data = demo_zip()
    archive = inspect(data)

    stored = await upload(store, BUCKET, data, "demo", "1.0.0", archive.sha256)

    assert stored.key == f"demo/1.0.0/{archive.sha256}.zip"
    assert (stored.size, stored.sha256) == (len(data), archive.sha256)
    assert await download(store, BUCKET, stored.key) == data


async def test_download_of_a_tampered_object_is_a_checksum_mismatch(store: ObjectStore) -> None:
    data = demo_zip()
    sha = hashlib.sha256(data).hexdigest()
    stored = await upload(store, BUCKET, data, "demo", "1.0.0", sha)
    await store.put(BUCKET, stored.key, data[:-1] + b"\x01")  # same key, other bytes

    with pytest.raises(ChecksumMismatch) as caught:
        await download(store, BUCKET, stored.key)

    error = caught.value
    assert error.status_code == 502
    assert "checksum mismatch" in error.detail
    assert stored.key in error.detail
    assert error.extra["expected"] == sha
    assert error.extra["actual"] == hashlib.sha256(data[:-1] + b"\x01").hexdigest()


async def test_upload_refuses_bytes_that_do_not_match_the_sha256(store: ObjectStore) -> None:
    data = demo_zip()
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(ChecksumMismatch):
        await upload(store, BUCKET, data, "demo", "1.0.0", wrong)

    assert await store.list(BUCKET) == []


async def test_download_of_a_missing_zip_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await download(store, BUCKET, f"demo/1.0.0/{'a' * 64}.zip")


@pytest.mark.parametrize(
    "key",
    ["demo.zip", "demo/1.0.0/latest.zip", f"demo/1.0.0/{'A' * 64}.zip", f"a/b/c/{'a' * 64}.zip"],
)
async def test_download_refuses_keys_without_a_sha256(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await download(LocalObjectStore(tmp_path), BUCKET, key)

    assert caught.value.extra["errors"][0]["loc"] == ["key"]


@pytest.mark.parametrize(
    ("version", "sha256", "loc"),
    [
        ("1.0.0/../x", "a" * 64, "version"),
        ("", "a" * 64, "version"),
        ("1.0.0", "a" * 63, "sha256"),
        ("1.0.0", "A" * 64, "sha256"),
    ],
)
def test_object_key_refuses_unsafe_parts(version: str, sha256: str, loc: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        object_key("demo", version, sha256)

    assert caught.value.extra["errors"][0]["loc"] == [loc]


def test_object_key_format() -> None:
    sha = "0123456789abcdef" * 4

    assert object_key("mikrotik", "1.2.0+build.5", sha) == f"mikrotik/1.2.0+build.5/{sha}.zip"
