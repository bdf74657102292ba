"""Both object-store backends, held to one contract (local folder and S3 via moto)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import pytest
from aiobotocore.config import AioConfig

from isp.config import Settings
from isp.errors import (
    BucketMissing,
    ConfigError,
    Conflict,
    NotFound,
    StorageError,
    ValidationFailed,
)
from isp.storage import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    StoredObject,
    create_object_store,
)
from tests.s3server import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

BUCKET = "objects"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    backend: ObjectStore
    if request.param == "local":
        backend = LocalObjectStore(tmp_path / "objects")
    else:
        # Looked up here so that the local run never starts moto.
        endpoint = request.getfixturevalue("s3_reset")
        backend = S3ObjectStore(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    await backend.ensure_buckets(BUCKET)
    yield backend
    await backend.close()


@pytest.fixture
async def s3_store(s3_reset: str) -> AsyncIterator[S3ObjectStore]:
    backend = S3ObjectStore(s3_reset, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    await backend.ensure_buckets(BUCKET)
    yield backend
    await backend.close()


async def test_put_then_get_round_trips_with_size_and_sha256(store: ObjectStore) -> None:
    data = b"/export compact\n/ip address add address=10.0.0.1/24\n"

    stored = await store.put(BUCKET, "router.rsc", data)

    assert stored == StoredObject(key="router.rsc", size=len(data), sha256=_sha(data))
    assert await store.get(BUCKET, "router.rsc") == data


async def test_put_overwrites_existing_object(store: ObjectStore) -> None:
    await store.put(BUCKET, "plugin.zip", b"version 1")

    stored = await store.put(BUCKET, "plugin.zip", b"version 2, longer")

    assert await store.get(BUCKET, "plugin.zip") == b"version 2, longer"
    assert stored.size == len(b"version 2, longer")
    assert await store.list(BUCKET) == [stored]


async def test_empty_object_round_trips(store: ObjectStore) -> None:
    stored = await store.put(BUCKET, "empty", b"")

    assert stored == StoredObject(key="empty", size=0, sha256=_sha(b""))
    assert await store.get(BUCKET, "empty") == b""


async def test_get_missing_object_raises_not_found_naming_bucket_and_key(
    store: ObjectStore,
) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get(BUCKET, "nope/missing.zip")

    assert "nope/missing.zip" in caught.value.detail
    assert BUCKET in caught.value.detail
    assert caught.value.extra == {"bucket": BUCKET, "key": "nope/missing.zip"}


async def test_missing_bucket_is_the_servers_problem_not_a_404(store: ObjectStore) -> None:
    for attempt in (
        lambda: store.get("no-such-bucket", "a"),
        lambda: store.put("no-such-bucket", "a", b"x"),
        lambda: store.list("no-such-bucket"),
        lambda: store.delete("no-such-bucket", "a"),
    ):
        with pytest.raises(BucketMissing, match="no-such-bucket") as caught:
            await attempt()
        assert caught.value.status_code == 503
        assert caught.value.to_problem()["component"] == "object_store"
    assert await store.exists("no-such-bucket", "a") is False


async def test_delete_removes_object_and_is_idempotent(store: ObjectStore) -> None:
    await store.put(BUCKET, "a/b.txt", b"x")

    await store.delete(BUCKET, "a/b.txt")
    await store.delete(BUCKET, "a/b.txt")
    await store.delete(BUCKET, "never/existed")

    assert await store.exists(BUCKET, "a/b.txt") is False
    with pytest.raises(NotFound):
        await store.get(BUCKET, "a/b.txt")


async def test_list_filters_by_prefix_and_sorts_by_key(store: ObjectStore) -> None:
    contents = {
        "backups/2/b.rsc": b"two-b",
        "backups/1/z.rsc": b"one-z",
        "backups/1/a.rsc": b"one-a",
        "backups-old/x.rsc": b"old",
        "plugins/p.zip": b"zip",
    }
    for key, data in contents.items():
        await store.put(BUCKET, key, data)

    everything = await store.list(BUCKET)
    under_backups = await store.list(BUCKET, prefix="backups/")
    partial_name = await store.list(BUCKET, prefix="backups/1/a")
    string_prefix = await store.list(BUCKET, prefix="backups")

    assert [item.key for item in everything] == sorted(contents)
    assert everything == [
        StoredObject(key=k, size=len(contents[k]), sha256=_sha(contents[k]))
        for k in sorted(contents)
    ]
    assert [item.key for item in under_backups] == [
        "backups/1/a.rsc",
        "backups/1/z.rsc",
        "backups/2/b.rsc",
    ]
    assert [item.key for item in partial_name] == ["backups/1/a.rsc"]
    assert [item.key for item in string_prefix] == [
        "backups-old/x.rsc",
        "backups/1/a.rsc",
        "backups/1/z.rsc",
        "backups/2/b.rsc",
    ]
    assert await store.list(BUCKET, prefix="nothing/") == []


async def test_exists_reports_objects_only(store: ObjectStore) -> None:
    await store.put(BUCKET, "dir/file", b"x")

    assert await store.exists(BUCKET, "dir/file") is True
    assert await store.exists(BUCKET, "dir") is False
    assert await store.exists(BUCKET, "dir/other") is False


async def test_keys_with_sub_folders_are_independent_objects(store: ObjectStore) -> None:
    await store.put(BUCKET, "plugins/mikrotik/1.0.0.zip", b"one")
    await store.put(BUCKET, "plugins/mikrotik/1.1.0.zip", b"two")
    await store.put(BUCKET, "plugins/sms_gateway/0.1.0.zip", b"three")

    await store.delete(BUCKET, "plugins/mikrotik/1.0.0.zip")

    assert await store.get(BUCKET, "plugins/mikrotik/1.1.0.zip") == b"two"
    assert [item.key for item in await store.list(BUCKET, prefix="plugins/")] == [
        "plugins/mikrotik/1.1.0.zip",
        "plugins/sms_gateway/0.1.0.zip",
    ]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("../escape", "'..'"),
        ("a/../../escape", "'..'"),
        ("a/./b", "'.'"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a//b", "empty segments"),
        ("folder/", "empty segments"),
        ("x" * 256, "255 bytes"),
        ("a/.0123.isp-partial", "reserved"),
    ],
)
async def test_bad_keys_are_rejected_before_any_io(
    store: ObjectStore, key: str, reason: str
) -> None:
    for attempt in (
        lambda: store.put(BUCKET, key, b"x"),
        lambda: store.get(BUCKET, key),
        lambda: store.delete(BUCKET, key),
        lambda: store.exists(BUCKET, key),
    ):
        with pytest.raises(ValidationFailed, match=reason) as caught:
            await attempt()
        assert caught.value.extra["errors"][0]["loc"] == ["key"]


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "../objects", "a/b", "-start"])
async def test_bad_bucket_names_are_rejected(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ValidationFailed, match="bucket"):
        await store.put(bucket, "key", b"x")
    with pytest.raises(ValidationFailed, match="bucket"):
        await store.ensure_buckets(bucket)


@pytest.mark.parametrize("prefix", ["/abs", "../up", "a/../b", "a\\b"])
async def test_bad_list_prefix_is_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValidationFailed, match="prefix"):
        await store.list(BUCKET, prefix=prefix)


async def test_large_object_round_trips(store: ObjectStore) -> None:
    data = os.urandom(5 * 1024 * 1024)

    stored = await store.put(BUCKET, "big.bin", data)

    assert stored.size == len(data)
    assert stored.sha256 == _sha(data)
    assert await store.get(BUCKET, "big.bin") == data
    assert await store.list(BUCKET) == [stored]


async def test_ping_succeeds_on_a_working_store(store: ObjectStore) -> None:
    await store.ping()


async def test_ensure_buckets_is_idempotent(store: ObjectStore) -> None:
    await store.put(BUCKET, "keep", b"x")

    await store.ensure_buckets(BUCKET, "second")
    await store.ensure_buckets(BUCKET, "second")

    assert await store.get(BUCKET, "keep") == b"x"
    assert await store.list("second") == []


# --- local backend -----------------------------------------------------------------


@pytest.fixture
async def local_store(tmp_path: Path) -> LocalObjectStore:
    backend = LocalObjectStore(tmp_path / "objects")
    await backend.ensure_buckets(BUCKET)
    return backend


async def test_local_put_leaves_no_temporary_file(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    await local_store.put(BUCKET, "a/b.zip", b"one")
    await local_store.put(BUCKET, "a/b.zip", b"two")

    assert sorted(os.listdir(tmp_path / "objects" / BUCKET / "a")) == ["b.zip"]


async def test_local_failed_write_keeps_old_bytes_and_cleans_up(
    local_store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_store.put(BUCKET, "plugin.zip", b"good")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match="No space left"):
        await local_store.put(BUCKET, "plugin.zip", b"half-written")
    monkeypatch.undo()

    assert await local_store.get(BUCKET, "plugin.zip") == b"good"
    assert os.listdir(tmp_path / "objects" / BUCKET) == ["plugin.zip"]


async def test_local_key_colliding_with_folder_is_a_conflict(
    local_store: LocalObjectStore,
) -> None:
    await local_store.put(BUCKET, "a/b", b"x")

    with pytest.raises(Conflict):
        await local_store.put(BUCKET, "a", b"y")
    with pytest.raises(Conflict):
        await local_store.put(BUCKET, "a/b/c", b"y")


async def test_local_put_many_writes_all_or_none_when_one_object_cannot_be_staged(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    await local_store.put(BUCKET, "a/b", b"x")

    with pytest.raises(Conflict):
        await local_store.put_many(BUCKET, [("export/one.rsc", b"1"), ("a", b"2")])

    assert [o.key for o in await local_store.list(BUCKET)] == ["a/b"]
    assert os.listdir(tmp_path / "objects" / BUCKET / "export") == []  # no temporary file


async def test_local_put_many_removes_the_objects_renamed_before_a_failed_rename(
    local_store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_store.put(BUCKET, "kept", b"k")
    renames: list[str] = []
    real_replace = os.replace

    def second_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append(str(dst))
        if len(renames) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(StorageError, match="Input/output error"):
        await local_store.put_many(BUCKET, [("b/one", b"1"), ("b/two", b"2")])
    monkeypatch.undo()

    assert len(renames) == 2
    assert [o.key for o in await local_store.list(BUCKET)] == ["kept"]
    assert os.listdir(tmp_path / "objects" / BUCKET / "b") == []


async def test_local_put_many_stores_every_object(local_store: LocalObjectStore) -> None:
    stored = await local_store.put_many(BUCKET, [("r/export.rsc", b"e"), ("r/backup.bin", b"b")])

    assert [o.key for o in stored] == ["r/export.rsc", "r/backup.bin"]
    assert await local_store.get(BUCKET, "r/export.rsc") == b"e"
    assert await local_store.get(BUCKET, "r/backup.bin") == b"b"


async def test_local_ping_fails_when_root_is_missing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="missing or not writable"):
        await LocalObjectStore(tmp_path / "absent").ping()


# --- S3 backend --------------------------------------------------------------------


async def test_s3_ping_against_dead_endpoint_fails_quickly() -> None:
    dead = S3ObjectStore("http://127.0.0.1:1", S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match="unreachable"):
            await dead.ping()
    finally:
        await dead.close()
    assert time.monotonic() - started < 5


async def test_s3_ping_gives_up_on_a_silent_endpoint_after_ping_timeout() -> None:
    # Accepts TCP connections (the kernel backlog does) but never answers a request.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        backend = S3ObjectStore(
            f"http://127.0.0.1:{port}", S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION, ping_timeout=0.5
        )
        started = time.monotonic()
        try:
            with pytest.raises(StorageError, match="ping"):
                await backend.ping()
        finally:
            await backend.close()
    assert time.monotonic() - started < 3


async def test_s3_ping_fails_when_ping_bucket_is_missing(s3_reset: str) -> None:
    backend = S3ObjectStore(
        s3_reset, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION, ping_bucket="not-created"
    )
    try:
        with pytest.raises(StorageError, match="not-created"):
            await backend.ping()
        await backend.ensure_buckets("not-created")
        await backend.ping()
    finally:
        await backend.close()


async def test_s3_list_hashes_objects_written_without_our_metadata(
    s3_store: S3ObjectStore, s3_reset: str
) -> None:
    session = aioboto3.Session(
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
    )
    config = AioConfig(s3={"addressing_style": "path"})
    async with session.client("s3", endpoint_url=s3_reset, config=config) as client:
        await client.put_object(Bucket=BUCKET, Key="foreign.bin", Body=b"from another tool")

    assert await s3_store.list(BUCKET) == [
        StoredObject(key="foreign.bin", size=17, sha256=_sha(b"from another tool"))
    ]


async def test_s3_store_reopens_its_client_after_close(s3_store: S3ObjectStore) -> None:
    await s3_store.put(BUCKET, "k", b"v")
    await s3_store.close()

    assert await s3_store.get(BUCKET, "k") == b"v"


def test_s3_repr_never_shows_credentials() -> None:
    backend = S3ObjectStore("http://minio:9000", "AKIDEXAMPLE", "very-secret-key", "us-east-1")

    assert "very-secret-key" not in repr(backend)
    assert "AKIDEXAMPLE" not in repr(backend)


# --- factory -----------------------------------------------------------------------


def test_create_object_store_uses_local_folder_without_s3_endpoint(tmp_path: Path) -> None:
    store = create_object_store(Settings(data_dir=tmp_path))

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objects"


def test_create_object_store_uses_s3_when_endpoint_is_set(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        s3_endpoint_url="http://127.0.0.1:9000/",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_region="eu-west-1",
    )

    store = create_object_store(settings)

    assert isinstance(store, S3ObjectStore)
    assert store.endpoint_url == "http://127.0.0.1:9000"
    assert store.region == "eu-west-1"


def test_create_object_store_requires_s3_credentials(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:9000")

    with pytest.raises(ConfigError, match="ISP_S3_ACCESS_KEY") as caught:
        create_object_store(settings)

    assert [e["variable"] for e in caught.value.extra["errors"]] == [
        "ISP_S3_ACCESS_KEY",
        "ISP_S3_SECRET_KEY",
    ]
