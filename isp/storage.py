"""Object storage for plugin zips and router backups: S3/MinIO or a local folder.

Several instances share one S3 (or MinIO) endpoint in production; a single box keeps
its objects in a folder under ``ISP_DATA_DIR``. Both backends implement
:class:`ObjectStore` and behave the same, bucket and key validation included, so code
and tests written against one hold for the other.

Errors: a bad bucket name, key or prefix raises ``ValidationFailed``; a missing object
``NotFound``; a missing bucket ``BucketMissing`` (a ``StorageError``: the service is
misconfigured, 503); a local key that collides with a folder ``Conflict``; anything else
``StorageError``. botocore, aiohttp and OS errors are translated here, at one boundary
per backend, and nowhere else.

Deadlines. Each S3 operation as a whole runs under ``ISP_S3_TIMEOUT``: botocore's socket
timeouts do not bound a call. A ``PutObject`` sends ``Expect: 100-continue`` and aiohttp
waits for the ``100 Continue`` with no timeout at all, so a put to a stopped (SIGSTOP)
server hung indefinitely while a get failed after its retries of ``read_timeout``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from isp.availability import Availability
from isp.config import Settings
from isp.errors import (
    BucketMissing,
    ConfigError,
    Conflict,
    ISPError,
    NotFound,
    StorageError,
    ValidationFailed,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "create_object_store",
    "validate_bucket",
    "validate_key",
]

logger = logging.getLogger(__name__)

_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# In-progress local writes end with this; keys may not, so a listing never shows one.
_PARTIAL_SUFFIX: Final = ".isp-partial"
_LIST_CONCURRENCY: Final = 16
INLINE_HASH_LIMIT: Final = 1024 * 1024
_CLEANUP_BUDGET: Final = 0.5  # seconds per object a failed put_many may spend undoing itself


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored object: enough to verify a download without fetching it again."""

    key: str
    size: int
    sha256: str


class ObjectStore(Protocol):
    """What the service needs from a blob store; every method may raise an ``ISPError``."""

    async def put(self, bucket: str, key: str, data: bytes) -> StoredObject: ...
    async def put_many(
        self, bucket: str, items: Sequence[tuple[str, bytes]]
    ) -> builtins.list[StoredObject]: ...
    async def get(self, bucket: str, key: str) -> bytes: ...
    async def delete(self, bucket: str, key: str) -> None: ...
    async def list(self, bucket: str, prefix: str = "") -> builtins.list[StoredObject]: ...
    async def exists(self, bucket: str, key: str) -> bool: ...
    async def ping(self) -> None: ...
    async def ensure_buckets(self, *names: str) -> None: ...
    async def close(self) -> None: ...


def _invalid(field: str, value: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"invalid object {field} {value!r}: {why}", errors=[{"loc": [field], "msg": why}]
    )


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a portable S3 bucket name (and so a safe folder name)."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise _invalid(
            "bucket",
            bucket,
            "use 3-63 lowercase letters, digits, '.' or '-', starting and ending with a "
            "letter or digit",
        )
    return bucket


def _key_problem(key: str, *, is_prefix: bool = False) -> str | None:
    """Why ``key`` cannot name an object in both backends, or None when it can."""
    if not key:
        return "must not be empty"
    if "\x00" in key:
        return "must not contain a NUL character"
    if "\\" in key:
        return "must not contain a backslash; separate folders with '/'"
    if key.startswith("/"):
        return "must be relative (no leading '/')"
    try:
        if len(key.encode("utf-8")) > 1024:
            return "must be at most 1024 bytes of UTF-8"
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    # The last part of a prefix is a partial name: only the folders above it must be sound.
    segments = key.split("/")[:-1] if is_prefix else key.split("/")
    for segment in segments:
        if segment == "":
            return "must not contain empty segments ('//' or a trailing '/')"
        if segment in {".", ".."}:
            return "must not contain '.' or '..' segments"
        if len(segment.encode("utf-8")) > 255:
            return "each '/'-separated segment must be at most 255 bytes"
        if segment.endswith(_PARTIAL_SUFFIX):
            return f"segments ending in {_PARTIAL_SUFFIX!r} are reserved for in-progress writes"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` if it is safe as a path below a bucket folder and as an S3 key."""
    why = _key_problem(key)
    if why is not None:
        raise _invalid("key", key, why)
    return key


def _validate_prefix(prefix: str) -> str:
    why = _key_problem(prefix, is_prefix=True) if prefix else None
    if why is not None:
        raise _invalid("prefix", prefix, why)
    return prefix


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_bucket(bucket: str) -> BucketMissing:
    return BucketMissing(f"bucket {bucket!r} does not exist", bucket=bucket)


def _no_object(bucket: str, key: str) -> NotFound:
    return NotFound(f"object {key!r} not found in bucket {bucket!r}", bucket=bucket, key=key)


@contextlib.contextmanager
def _os_errors(action: str, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
    """The local backend's one translation boundary for OS errors."""
    where: dict[str, Any] = {n: v for n, v in (("bucket", bucket), ("key", key)) if v}
    try:
        yield
    except OSError as exc:
        raise StorageError(f"local object store failed to {action}: {exc}", **where) from exc


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX only)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalObjectStore:
    """Buckets are sub-folders of ``root``; keys with ``/`` become nested folders.

    Every file operation runs in a worker thread so the event loop never waits on disk.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    async def put(self, bucket: str, key: str, data: bytes) -> StoredObject:
        """Write atomically: readers see the old bytes or the new ones, never a mix."""
        bucket_dir = self.root / validate_bucket(bucket)
        with _os_errors("write", bucket, validate_key(key)):
            return await asyncio.to_thread(self._put_sync, bucket_dir, bucket, key, data)

    async def put_many(
        self, bucket: str, items: Sequence[tuple[str, bytes]]
    ) -> builtins.list[StoredObject]:
        """Several atomic writes in one worker-thread hop (a router's export and backup)."""
        bucket_dir = self.root / validate_bucket(bucket)
        keys = [validate_key(key) for key, _ in items]
        with _os_errors("write", bucket, ", ".join(keys)):
            named = [(key, data) for key, (_, data) in zip(keys, items, strict=True)]
            return await asyncio.to_thread(self._put_many_sync, bucket_dir, bucket, named)

    @staticmethod
    def _put_many_sync(
        bucket_dir: Path, bucket: str, items: Sequence[tuple[str, bytes]]
    ) -> builtins.list[StoredObject]:
        """All objects or none: every one is written to its temporary file first, then
        each is renamed into place; a failure before the last rename removes the temporary
        files and the objects already renamed. The renames are made durable once per
        folder. A crash between two renames can still leave the first objects (they are
        whole, and no record points to them)."""
        staged: builtins.list[tuple[Path, Path, StoredObject]] = []
        published: builtins.list[Path] = []
        try:
            for key, data in items:
                staged.append(LocalObjectStore._stage(bucket_dir, bucket, key, data))
            for tmp, path, _ in staged:
                os.replace(tmp, path)
                published.append(path)
        except BaseException:
            for path in published:
                path.unlink(missing_ok=True)
            for tmp, _, _ in staged[len(published) :]:
                tmp.unlink(missing_ok=True)
            raise
        for folder in dict.fromkeys(path.parent for path in published):
            fsync_dir(folder)
        return [stored for _, _, stored in staged]

    @staticmethod
    def _put_sync(bucket_dir: Path, bucket: str, key: str, data: bytes) -> StoredObject:
        tmp, path, stored = LocalObjectStore._stage(bucket_dir, bucket, key, data)
        try:
            # Same folder, so os.replace is a rename on one filesystem and thus atomic.
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return stored

    @staticmethod
    def _stage(
        bucket_dir: Path, bucket: str, key: str, data: bytes
    ) -> tuple[Path, Path, StoredObject]:
        """Write ``data`` durably to a temporary file beside the object's path (so a
        rename puts it in place atomically): (temporary file, path, what will be stored)."""
        if not bucket_dir.is_dir():
            raise _no_bucket(bucket)
        path = bucket_dir / key
        # S3 allows both "a" and "a/b"; a folder tree cannot, so say so plainly.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            collides = path.is_dir()
        except (FileExistsError, NotADirectoryError):
            collides = True
        if collides:
            raise Conflict(
                f"key {key!r} collides with the folder or object of another key in bucket "
                f"{bucket!r}",
                bucket=bucket,
                key=key,
            )
        tmp = path.parent / f".{secrets.token_hex(8)}{_PARTIAL_SUFFIX}"
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, path, StoredObject(key=key, size=len(data), sha256=_sha256_hex(data))

    async def get(self, bucket: str, key: str) -> bytes:
        bucket_dir = self.root / validate_bucket(bucket)
        with _os_errors("read", bucket, validate_key(key)):
            return await asyncio.to_thread(self._get_sync, bucket_dir, bucket, key)

    @staticmethod
    def _get_sync(bucket_dir: Path, bucket: str, key: str) -> bytes:
        try:
            return (bucket_dir / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise (_no_object(bucket, key) if bucket_dir.is_dir() else _no_bucket(bucket)) from exc

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; deleting one that is not there is not an error."""
        bucket_dir = self.root / validate_bucket(bucket)
        with _os_errors("delete", bucket, validate_key(key)):
            await asyncio.to_thread(self._delete_sync, bucket_dir, bucket, key)

    @staticmethod
    def _delete_sync(bucket_dir: Path, bucket: str, key: str) -> None:
        if not bucket_dir.is_dir():
            raise _no_bucket(bucket)
        # A folder or a path through a file is "no such object": nothing to delete.
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            (bucket_dir / key).unlink()

    async def list(self, bucket: str, prefix: str = "") -> builtins.list[StoredObject]:
        """Objects whose key starts with ``prefix``, sorted by key, hashed on the fly."""
        bucket_dir = self.root / validate_bucket(bucket)
        with _os_errors("list", bucket):
            return await asyncio.to_thread(
                self._list_sync, bucket_dir, bucket, _validate_prefix(prefix)
            )

    @staticmethod
    def _list_sync(bucket_dir: Path, bucket: str, prefix: str) -> builtins.list[StoredObject]:
        if not bucket_dir.is_dir():
            raise _no_bucket(bucket)
        # Only the folder the prefix points into can hold matches; walk just that.
        start = bucket_dir.joinpath(*prefix.split("/")[:-1])
        found = []
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.endswith(_PARTIAL_SUFFIX):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(bucket_dir).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    with open(path, "rb") as fh:
                        digest = hashlib.file_digest(fh, "sha256").hexdigest()
                        size = os.fstat(fh.fileno()).st_size
                except FileNotFoundError:  # deleted while we listed
                    continue
                found.append(StoredObject(key=key, size=size, sha256=digest))
        return sorted(found, key=lambda item: item.key)

    async def exists(self, bucket: str, key: str) -> bool:
        path = self.root / validate_bucket(bucket) / validate_key(key)
        with _os_errors("stat", bucket, key):
            return await asyncio.to_thread(path.is_file)

    async def ping(self) -> None:
        """Fail unless the root folder exists and is writable (for ``/readyz``)."""
        with _os_errors("check"):
            usable = await asyncio.to_thread(
                lambda: self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
            )
        if not usable:
            raise StorageError(f"object folder {str(self.root)!r} is missing or not writable")

    async def ensure_buckets(self, *names: str) -> None:
        folders = [self.root / validate_bucket(name) for name in names]
        with _os_errors("create buckets"):
            for folder in folders:
                await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing to release; present so both backends are closed the same way."""


@contextlib.contextmanager
def _s3_errors(action: str, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
    """The S3 backend's one translation boundary for botocore and aiohttp errors.

    S3 error codes (not message text) are the stable part of its API, so they decide.
    """
    where: dict[str, Any] = {n: v for n, v in (("bucket", bucket), ("key", key)) if v}
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), error.get("Message", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (key is None and status == 404 and bucket):
            raise _no_bucket(bucket or "") from exc
        if code in {"NoSuchKey", "404", "NotFound"} and bucket and key:
            raise _no_object(bucket, key) from exc
        if code == "BucketAlreadyOwnedByYou":
            raise Conflict(f"bucket {bucket!r} already exists", **where) from exc
        raise StorageError(
            f"object store refused to {action}: {code or status} {message}".strip(), **where
        ) from exc
    except TimeoutError as exc:
        raise StorageError(
            f"object store did not answer during {action} within the deadline (ISP_S3_TIMEOUT)",
            **where,
        ) from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise StorageError(
            f"object store unreachable during {action}: {exc or type(exc).__name__}", **where
        ) from exc


class S3ObjectStore:
    """S3 or MinIO through aioboto3, with one long-lived client opened on first use.

    Timeouts are short and retries few so that ``/readyz`` answers quickly when the
    endpoint is down instead of hanging a load balancer's health check.
    """

    def __init__(
        self,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        *,
        ping_bucket: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 2,
        ping_timeout: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._timeout = timeout
        self._availability = Availability("object_store")
        self._ping_bucket = validate_bucket(ping_bucket) if ping_bucket else None
        self._ping_timeout = ping_timeout
        # Explicit credentials: never pick up whatever AWS profile the host happens to have.
        self._session = aioboto3.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},  # MinIO and moto serve buckets as paths
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: S3Client | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # no credentials, ever
        return f"S3ObjectStore(endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    @contextlib.asynccontextmanager
    async def _call(
        self,
        action: str,
        bucket: str | None = None,
        key: str | None = None,
        *,
        creating: bool = False,
    ) -> AsyncIterator[S3Client]:
        """One whole S3 operation under ``ISP_S3_TIMEOUT``, translated and reported.

        Success means the store is up; an unreachable, hung or misconfigured store (a
        missing bucket included, unless ``creating`` it) is an outage, logged once; a
        missing object or an existing bucket changes nothing.
        """
        started = time.monotonic()
        try:
            with _s3_errors(action, bucket, key):
                async with asyncio.timeout(self._timeout):
                    yield await self._client()
        except BucketMissing:
            if creating:
                self._availability.answered(started)
            else:
                self._availability.failed(f"bucket {bucket!r} does not exist", started)
            raise
        except StorageError as exc:
            self._availability.failed(exc.detail, started)
            raise
        except (NotFound, Conflict):
            # an answer, but no sign of health: S3 says 404 to a HEAD of a key in a
            # missing bucket too
            raise
        self._availability.answered(started)

    async def _client(self) -> S3Client:
        client = self._s3
        if client is None:
            async with self._lock:
                client = self._s3
                if client is None:
                    stack = contextlib.AsyncExitStack()
                    client = await stack.enter_async_context(
                        self._session.client(
                            "s3", endpoint_url=self.endpoint_url, config=self._config
                        )
                    )
                    self._s3, self._stack = client, stack
        return client

    async def put(self, bucket: str, key: str, data: bytes) -> StoredObject:
        """Upload with the SHA-256 in metadata so ``list`` need not download to hash."""
        bucket, key = validate_bucket(bucket), validate_key(key)
        # Hashing a small object is cheaper than a hop to a worker thread.
        if len(data) < INLINE_HASH_LIMIT:
            digest = _sha256_hex(data)
        else:
            digest = await asyncio.to_thread(_sha256_hex, data)
        async with self._call("write", bucket, key) as s3:
            await s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": digest})
        return StoredObject(key=key, size=len(data), sha256=digest)

    async def put_many(
        self, bucket: str, items: Sequence[tuple[str, bytes]]
    ) -> builtins.list[StoredObject]:
        """All objects or none: written concurrently (a hung store fails them together),
        and those already written are deleted again when another one fails."""
        tasks: builtins.list[asyncio.Task[StoredObject]] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.put(bucket, key, data)) for key, data in items]
        except ExceptionGroup as failures:
            await self._forget(bucket, [t.result().key for t in tasks if _succeeded(t)])
            first = failures.exceptions[0]
            if isinstance(first, ISPError):
                raise first from first.__cause__
            raise
        return [task.result() for task in tasks]

    async def _forget(self, bucket: str, keys: builtins.list[str]) -> None:
        """Best-effort removal of objects a failed ``put_many`` wrote (briefly: the caller
        already waited for the failure)."""
        for key in keys:
            try:
                async with asyncio.timeout(_CLEANUP_BUDGET):
                    await self.delete(bucket, key)
            except (ISPError, TimeoutError):
                logger.warning("orphan object left", extra={"bucket": bucket, "key": key})

    async def get(self, bucket: str, key: str) -> bytes:
        bucket, key = validate_bucket(bucket), validate_key(key)
        async with self._call("read", bucket, key) as s3:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                return await body.read()

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; S3 itself treats deleting a missing key as success."""
        bucket, key = validate_bucket(bucket), validate_key(key)
        async with self._call("delete", bucket, key) as s3:
            await s3.delete_object(Bucket=bucket, Key=key)

    async def list(self, bucket: str, prefix: str = "") -> builtins.list[StoredObject]:
        """Objects whose key starts with ``prefix``, sorted by key."""
        bucket, prefix = validate_bucket(bucket), _validate_prefix(prefix)
        async with self._call("list", bucket) as s3:
            listed: builtins.list[tuple[str, int]] = []
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                listed.extend((item["Key"], item["Size"]) for item in page.get("Contents", []))
            limit = asyncio.Semaphore(_LIST_CONCURRENCY)
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(self._describe(bucket, key, limit)) for key, _ in listed
                    ]
            except ExceptionGroup as failures:
                # Callers expect one ISPError, not a group; the first says what went wrong.
                first = failures.exceptions[0]
                if isinstance(first, ISPError):
                    raise first from first.__cause__
                raise
        found = [item for task in tasks if (item := task.result()) is not None]
        return sorted(found, key=lambda item: item.key)

    async def _describe(
        self, bucket: str, key: str, limit: asyncio.Semaphore
    ) -> StoredObject | None:
        """Size and SHA-256 of one listed object; None when it vanished meanwhile."""
        async with limit:
            try:
                with _s3_errors("list", bucket, key):
                    s3 = await self._client()
                    head = await s3.head_object(Bucket=bucket, Key=key)
                    digest = head.get("Metadata", {}).get("sha256")
                    if digest is not None:
                        return StoredObject(key=key, size=head["ContentLength"], sha256=digest)
                    # Written by another tool without our metadata: hash it ourselves.
                    response = await s3.get_object(Bucket=bucket, Key=key)
                    async with response["Body"] as body:
                        data = await body.read()
            except NotFound:
                return None
        return StoredObject(
            key=key, size=len(data), sha256=await asyncio.to_thread(_sha256_hex, data)
        )

    async def exists(self, bucket: str, key: str) -> bool:
        bucket, key = validate_bucket(bucket), validate_key(key)
        try:
            async with self._call("stat", bucket, key) as s3:
                await s3.head_object(Bucket=bucket, Key=key)
        except NotFound:
            return False
        return True

    async def ping(self) -> None:
        """Raise ``StorageError`` within ``ping_timeout`` unless the endpoint answers."""
        async with self._call("ping", self._ping_bucket) as s3:
            async with asyncio.timeout(self._ping_timeout):
                if self._ping_bucket is None:
                    await s3.list_buckets()
                else:  # needs only bucket-level rights, unlike ListAllMyBuckets
                    await s3.head_bucket(Bucket=self._ping_bucket)

    async def ensure_buckets(self, *names: str) -> None:
        """Create the buckets that are missing; racing another instance is fine."""
        checked = [validate_bucket(name) for name in names]
        for name in checked:
            try:
                async with self._call("check bucket", name, creating=True) as s3:
                    await s3.head_bucket(Bucket=name)
            except BucketMissing:
                location: Any = {"LocationConstraint": self.region}  # stubs want a Literal
                extra = (
                    {} if self.region == "us-east-1" else {"CreateBucketConfiguration": location}
                )
                with contextlib.suppress(Conflict):
                    async with self._call("create bucket", name) as s3:
                        await s3.create_bucket(Bucket=name, **extra)
                    logger.info("created bucket %s at %s", name, self.endpoint_url)

    async def close(self) -> None:
        """Close the client and its connection pool; a later call opens a new one."""
        async with self._lock:
            stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _succeeded(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def create_object_store(settings: Settings) -> ObjectStore:
    """S3 when ``ISP_S3_ENDPOINT_URL`` is set, else the folder under ``ISP_DATA_DIR``."""
    if settings.s3_endpoint_url is None:
        return LocalObjectStore(settings.objects_dir)
    if settings.s3_access_key is None or settings.s3_secret_key is None:
        raise ConfigError(
            "ISP_S3_ACCESS_KEY and ISP_S3_SECRET_KEY must be set when ISP_S3_ENDPOINT_URL is",
            errors=[
                {"variable": f"ISP_S3_{name.upper()}", "msg": "required with ISP_S3_ENDPOINT_URL"}
                for name, value in (
                    ("access_key", settings.s3_access_key),
                    ("secret_key", settings.s3_secret_key),
                )
                if value is None
            ],
        )
    return S3ObjectStore(
        settings.s3_endpoint_url,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
        ping_bucket=settings.s3_plugins_bucket,
        timeout=settings.s3_timeout,
    )
