"""Device backups: ask the plugins for artifacts, store them (encrypted), record them.

``device_backup`` hooks talk to routers for seconds, so unlike the other workflows this
one does not hold a transaction open while they run (on SQLite a long transaction blocks
every query of the process). The hooks receive ``db`` as the plain connection; what the
core records afterwards is written in one short transaction, and objects already put in
the store are deleted again if that fails.

Partial results. A hook that finished some artifacts and then failed (the MikroTik
plugin: the export is fetched, the binary step fails) raises a ``PluginError`` whose
``artifacts`` attribute holds the finished ones and whose ``step`` (extra field) names
what failed. The core stores and records those artifacts, then re-raises the error with
``stored`` added: the ``Backup`` records written (single backup) or queued (fleet job).
So a good export is never thrown away because of a later step, and the failure is still
reported. Artifacts never go into the problem document: they are an attribute.

At rest. Every object is sealed with the app's :class:`~isp.crypto.ObjectCipher` (a key
derived from ``ISP_SECRET_KEY``) before it reaches the object store; ``sha256``, ``size``,
``changed``, retention and diffs are over the clear bytes. :func:`read_backup` opens an
object, and returns one stored before encryption as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.functions import Max
from tortoise.transactions import in_transaction

from isp.core import events
from isp.core.backup_health import record_health
from isp.core.models import Backup, BackupKind, Device, JobDevice
from isp.core.schemas import BackupOut
from isp.crypto import process_box
from isp.errors import (
    Conflict,
    DatabaseUnavailable,
    ISPError,
    PluginError,
    ValidationFailed,
    hook_fields,
)
from isp.plugins import registry
from isp.storage import ObjectStore

log = logging.getLogger(__name__)

EXTENSIONS = {BackupKind.EXPORT: "rsc", BackupKind.BINARY: "backup"}
THREAD_ABOVE = 1024 * 1024  # seal and open larger objects in a worker thread


@dataclass(frozen=True, slots=True)
class Artifact:
    """One backup a plugin produced: ``sha256`` is over the content minus volatile lines."""

    kind: BackupKind
    data: bytes
    sha256: str
    plugin: str
    keep_unchanged: int | None = None


def _artifact(value: Any, plugin: str, hook: str | None) -> Artifact:
    """Validate what hook ``plugin.hook`` returned; a malformed artifact is its error."""
    item = value if isinstance(value, Mapping) else getattr(value, "__dict__", {})
    data = item.get("data")
    if not isinstance(data, bytes | bytearray) or not data:
        raise _malformed(plugin, hook, "'data' must be non-empty bytes")
    try:
        kind = BackupKind(str(item.get("kind")))
    except ValueError as exc:
        why = f"'kind' must be export or binary, not {item.get('kind')!r}"
        raise _malformed(plugin, hook, why) from exc
    digest = item.get("sha256") or hashlib.sha256(data).hexdigest()
    keep = item.get("keep_unchanged")
    if keep is not None and (not isinstance(keep, int) or keep < 0):
        raise _malformed(plugin, hook, "'keep_unchanged' must be a whole number >= 0")
    return Artifact(
        kind=kind, data=bytes(data), sha256=str(digest), plugin=plugin, keep_unchanged=keep
    )


def _malformed(plugin: str, hook: str | None, why: str) -> PluginError:
    return PluginError(
        f"{plugin}.{hook} returned a malformed artifact: {why}",
        **hook_fields(plugin, hook, events.DEVICE_BACKUP),
        status=502,
    )


async def back_up_device(
    device: Device, store: ObjectStore, bucket: str, *, batch: BackupBatch | None = None
) -> list[Backup]:
    """Run the device_backup hooks for ``device`` and record what they return.

    With ``batch`` (fleet jobs) the rows are queued in the batch, written by its
    ``flush`` (with the device's health); the returned rows then have no ids yet.
    Without it the device's backup health is written here. A hook failure that carries
    finished ``artifacts`` has those stored first (see the module docstring).
    """
    if batch is not None:
        return await _back_up(device, store, bucket, batch)
    try:
        backups = await _back_up(device, store, bucket, None)
    except DatabaseUnavailable:
        raise  # nothing can be recorded, and waiting for it again would only delay the 503
    except ISPError as exc:
        await record_health({device.id: {"reason": exc.detail}})
        raise
    await record_health({device.id: None})
    return backups


async def _back_up(
    device: Device, store: ObjectStore, bucket: str, batch: BackupBatch | None
) -> list[Backup]:
    try:
        results = await registry.emit(events.DEVICE_BACKUP, device, db=get_connection("default"))
    except PluginError as exc:
        finished = _finished(exc)
        if not finished:
            raise
        stored = await _store(device, finished, store, bucket, batch)
        exc.extra["stored"] = [
            BackupOut.model_validate(row, from_attributes=True).model_dump(mode="json")
            if row.id is not None
            else {"kind": row.kind.value, "sha256": row.sha256, "size": row.size}
            for row in stored
        ]
        log.warning(
            "device backup partly failed; finished artifacts stored",
            extra={
                "device_id": device.id,
                "plugin": exc.plugin,
                "step": exc.extra.get("step"),
                "stored": [row.kind.value for row in stored],
            },
        )
        raise
    artifacts: list[Artifact] = []
    for result in results:
        values = result.value if isinstance(result.value, list | tuple) else [result.value]
        artifacts += [_artifact(v, result.plugin, result.hook) for v in values if v is not None]
    if not artifacts:
        raise Conflict(
            f"no enabled plugin backs up {device.vendor.value} devices "
            f"(device {device.id}): enable one that handles device_backup",
            device_id=device.id,
        )
    return await _store(device, artifacts, store, bucket, batch)


def _finished(error: PluginError) -> list[Artifact]:
    """The artifacts a failed hook finished (its ``artifacts`` attribute), validated."""
    values = getattr(error, "artifacts", None)
    if not isinstance(values, list | tuple) or not values:
        return []
    try:
        return [
            _artifact(v, error.plugin or "unknown", error.hook) for v in values if v is not None
        ]
    except PluginError as malformed:
        log.warning(
            "a failed device_backup hook carried malformed artifacts; none stored",
            extra={"plugin": error.plugin, "reason": malformed.detail},
        )
        return []


async def _store(
    device: Device,
    artifacts: list[Artifact],
    store: ObjectStore,
    bucket: str,
    batch: BackupBatch | None,
) -> list[Backup]:
    """Seal and put every artifact, then record it (or queue it in ``batch``)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    keyed = [
        (
            artifact,
            f"devices/{device.id}/{stamp}-{artifact.kind.value}-"
            f"{artifact.sha256[:16]}.{EXTENSIONS[artifact.kind]}",
        )
        for artifact in artifacts
    ]
    stored = False
    try:
        await store.put_many(bucket, await _sealed(keyed))
        stored = True
        if batch is not None:
            return batch.add(device.id, keyed)
        backups = await _record(device, keyed)
    except DatabaseUnavailable:
        # The record's COMMIT may have reached the server before it stopped answering:
        # an object without a row is harmless, a row whose object was deleted is not.
        if stored:
            log.warning("backup objects kept: their record is unconfirmed",
                        extra={"keys": [key for _, key in keyed]})  # fmt: skip
        raise
    except BaseException:
        for _, key in keyed if stored else ():
            try:
                await store.delete(bucket, key)
            except ISPError:
                log.warning("orphan backup object left", extra={"key": key})
        raise
    for artifact in artifacts:
        if artifact.keep_unchanged is not None:
            await prune_unchanged(device.id, artifact.kind, artifact.keep_unchanged, store, bucket)
    return backups


async def _sealed(keyed: list[tuple[Artifact, str]]) -> list[tuple[str, bytes]]:
    """Each artifact's bytes encrypted for its object key (big ones in a thread)."""
    cipher = process_box().objects()

    def seal() -> list[tuple[str, bytes]]:
        return [(key, cipher.seal(artifact.data, key)) for artifact, key in keyed]

    if sum(len(artifact.data) for artifact, _ in keyed) > THREAD_ABOVE:
        return await asyncio.to_thread(seal)
    return seal()


async def read_backup(backup: Backup, store: ObjectStore, bucket: str) -> bytes:
    """A backup's clear bytes, whether stored sealed or (before encryption) as they were."""
    blob = await store.get(bucket, backup.object_key)
    cipher = process_box().objects()
    if len(blob) > THREAD_ABOVE:
        return await asyncio.to_thread(cipher.open, blob, backup.object_key)
    return cipher.open(blob, backup.object_key)


async def _record(device: Device, stored: list[tuple[Artifact, str]]) -> list[Backup]:
    """Insert one row per artifact, ``changed`` against the newest row of its kind."""
    kinds = sorted({artifact.kind for artifact, _ in stored})
    newest = (
        Backup.filter(device_id=device.id, kind__in=kinds)
        .group_by("kind")
        .annotate(newest=Max("id"))
    )
    latest = {
        row["kind"]: row["sha256"]
        for row in await Backup.filter(id__in=Subquery(newest.values("newest"))).values(
            "kind", "sha256"
        )
    }
    new = [
        Backup(
            device_id=device.id,
            kind=artifact.kind,
            sha256=artifact.sha256,
            size=len(artifact.data),
            changed=latest.get(artifact.kind) != artifact.sha256,
            object_key=key,
        )
        for artifact, key in stored
    ]
    await Backup.bulk_create(new)  # one statement: atomic without a transaction
    return list(await Backup.filter(object_key__in=[key for _, key in stored]).order_by("id"))


async def prune_unchanged(
    device_id: int, kind: BackupKind, keep: int, store: ObjectStore, bucket: str
) -> int:
    """Keep every changed backup; of the unchanged ones keep the newest ``keep``."""
    doomed = (
        await Backup.filter(device_id=device_id, kind=kind, changed=False)
        .order_by("-id")
        .offset(keep)
        .limit(10_000)
    )
    for backup in doomed:
        await store.delete(bucket, backup.object_key)
        await backup.delete()
    if doomed:
        log.info(
            "pruned unchanged backups",
            extra={"device_id": device_id, "kind": kind.value, "pruned": len(doomed)},
        )
    return len(doomed)


async def diff_exports(first: Backup, second: Backup, store: ObjectStore, bucket: str) -> str:
    """A unified diff from ``second`` (older, usually) to ``first``, both text exports."""
    for backup in (first, second):
        if backup.kind is not BackupKind.EXPORT:
            raise ValidationFailed(
                f"backup {backup.id} is a binary backup; only exports can be compared",
                errors=[{"loc": ["query", "against"], "msg": "not an export"}],
            )
    old, new = await read_backup(second, store, bucket), await read_backup(first, store, bucket)

    def render() -> str:
        return "".join(
            difflib.unified_diff(
                old.decode("utf-8", "replace").replace("\r\n", "\n").splitlines(keepends=True),
                new.decode("utf-8", "replace").replace("\r\n", "\n").splitlines(keepends=True),
                fromfile=f"backup-{second.id} ({second.created_at.isoformat()})",
                tofile=f"backup-{first.id} ({first.created_at.isoformat()})",
            )
        )

    return await asyncio.to_thread(render)


class BackupBatch:
    """One fleet task's backups and device outcomes, recorded in batches, each device once.

    One query finds the newest backup of each kind for the task's devices; each ``flush``
    writes, in one transaction, the ``JobDevice`` outcome rows and the ``Backup`` rows of
    every device whose outcome is known, then prunes where a plugin asked to. A device
    already recorded for this job (the task ran before on an instance that died after
    recording it) is skipped: its new objects are deleted and nothing is written twice.
    A crash loses at most what was queued since the last flush; the task is then run
    again and backs those devices up again.
    """

    def __init__(self, store: ObjectStore, bucket: str, job_id: Any) -> None:
        self._store, self._bucket, self._job_id = store, bucket, job_id
        self._latest: dict[tuple[int, BackupKind], str] = {}
        self._pending: list[Backup] = []
        self._outcomes: dict[int, dict[str, Any] | None] = {}
        self._prune: dict[tuple[int, BackupKind], int] = {}

    async def prime(self, device_ids: list[int]) -> None:
        for start in range(0, len(device_ids), 500):
            page = device_ids[start : start + 500]
            newest = (
                Backup.filter(device_id__in=page)
                .group_by("device_id", "kind")
                .annotate(newest=Max("id"))
                .values("newest")
            )
            for row in await Backup.filter(id__in=Subquery(newest)).values(
                "device_id", "kind", "sha256"
            ):
                self._latest[(row["device_id"], BackupKind(row["kind"]))] = row["sha256"]

    def add(self, device_id: int, stored: list[tuple[Artifact, str]]) -> list[Backup]:
        rows = []
        for artifact, key in stored:
            slot = (device_id, artifact.kind)
            rows.append(
                Backup(
                    device_id=device_id,
                    kind=artifact.kind,
                    sha256=artifact.sha256,
                    size=len(artifact.data),
                    changed=self._latest.get(slot) != artifact.sha256,
                    object_key=key,
                )
            )
            self._latest[slot] = artifact.sha256
            if artifact.keep_unchanged is not None:
                self._prune[slot] = artifact.keep_unchanged
        self._pending += rows
        return rows

    def outcome(self, device_id: int, failure: dict[str, Any] | None) -> None:
        """The device is finished: ``failure`` is its ``failed`` entry, None when backed up."""
        self._outcomes[device_id] = failure

    async def flush(self) -> list[tuple[int, dict[str, Any] | None, list[Backup]]]:
        """Record every finished device not yet recorded; returns what this call recorded."""
        outcomes, self._outcomes = self._outcomes, {}
        finished = [row for row in self._pending if row.device_id in outcomes]
        self._pending = [row for row in self._pending if row.device_id not in outcomes]
        recorded: list[tuple[int, dict[str, Any] | None, list[Backup]]] = []
        if outcomes:
            recorded = await self._write(outcomes, finished)
        prune, self._prune = self._prune, {}
        for (device_id, kind), keep in prune.items():
            await prune_unchanged(device_id, kind, keep, self._store, self._bucket)
        return recorded

    async def _write(
        self, outcomes: dict[int, dict[str, Any] | None], rows: list[Backup]
    ) -> list[tuple[int, dict[str, Any] | None, list[Backup]]]:
        for attempt in range(3):
            try:
                async with in_transaction() as conn:
                    known: set[int] = set(
                        await JobDevice.filter(job_id=self._job_id, device_id__in=list(outcomes))
                        .using_db(conn)
                        .values_list("device_id", flat=True)  # type: ignore[arg-type]
                    )
                    fresh = {d: f for d, f in outcomes.items() if d not in known}
                    keep = [row for row in rows if row.device_id in fresh]
                    await JobDevice.bulk_create(
                        [
                            JobDevice(job_id=self._job_id, device_id=d, failure=f)
                            for d, f in fresh.items()
                        ],
                        using_db=conn,
                    )
                    if keep:
                        await Backup.bulk_create(keep, batch_size=500, using_db=conn)
                    await record_health(fresh, conn)
                break
            except IntegrityError:
                # another instance recorded one of these devices meanwhile: read again
                if attempt == 2:
                    raise
        for row in rows:
            if row.device_id in known:
                with contextlib.suppress(ISPError):
                    await self._store.delete(self._bucket, row.object_key)
        if known:
            log.warning(
                "devices already recorded for this job were skipped",
                extra={"job_id": str(self._job_id), "devices": sorted(known)},
            )
        return [(d, f, [row for row in keep if row.device_id == d]) for d, f in fresh.items()]
