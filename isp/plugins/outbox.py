"""The outbox: deliveries owed to plugins, written in a transaction, run after it commits.

A workflow's after-commit hooks do not run inside it: :func:`enqueue_after_commit`
owes one :class:`~isp.plugins.models.OutboxRow` per hook, which :func:`commit` writes in
the workflow's own transaction together with its COMMIT (on SQLite in the same call to
the database's thread), so a delivery exists exactly when the commit happened (a
rolled-back workflow leaves none). After the commit, the instance that committed
delivers at once (:func:`transaction` hands it the rows); a poller on every instance
delivers what is left: rows of a process that died before delivering, retries after a
failure, rows another kind of caller wrote (:func:`enqueue`, e.g. compensations to
retry).

Delivery is at least once. Every attempt carries the row's idempotency key
(``delivery.id``) and its attempt number. An instance claims a row with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so instances claim different rows); a claim
of an instance that died lapses when its lease ends. SQLite serves one process, which
releases every claim when it starts. The rows of one plugin for one object are
delivered one at a time in commit (id) order. A failed attempt is retried with
exponential backoff; after ``ISP_OUTBOX_ATTEMPTS`` attempts the row stays ``failed``
with its error until ``POST /outbox/{id}/retry``.

A quarantined plugin's rows are held: written as usual, never claimed and never counted
as attempts until the quarantine is lifted (:meth:`Outbox.holds`).

Rows hold references, never values: the event's object by id (with the relations it had
loaded), other arguments as JSON with model instances as references, so no secret is
ever written here. The committing instance delivers with the objects it committed; any
later attempt reloads them from those references.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from time import monotonic
from typing import Any, Final, Protocol, cast

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.connection import get_connection
from tortoise.expressions import F, Q
from tortoise.functions import Min
from tortoise.models import Model
from tortoise.transactions import in_transaction

from isp.config import Settings
from isp.errors import DatabaseUnavailable, PluginError
from isp.plugins.hooks import Delivery
from isp.plugins.models import OutboxRow
from isp.plugins.registry import PluginRegistry

log = logging.getLogger(__name__)

AFTER_COMMIT: Final = "after_commit"
COMPENSATION: Final = "compensation"

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, FAILED, DELIVERED)

BATCH: Final = 100  # rows one claim takes at most
STOP_WAIT: Final = 3.0  # seconds the poller gets to finish its claim at shut-down
ACK_DELAY: Final = 0.02  # seconds successes wait to be recorded together (one write)
CONCURRENCY: Final = 32  # deliveries one instance runs at once
MAX_BACKOFF: Final = 300.0  # seconds, the longest wait between two attempts
PRUNE_EVERY: Final = 3600.0  # seconds between two deletions of old delivered rows
_REF: Final = "$ref"
_dumps: Final = functools.partial(json.dumps, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one attempt needs of its row: a claimed row read back, or written just now
    (then no model instance is built for it at all)."""

    id: int
    key: str
    kind: str
    event: str
    plugin: str
    hook: str
    subject_model: str | None
    subject_id: str | None
    relations: list[str]
    args: dict[str, Any]
    ordering_key: str
    attempts: int
    attempt_limit: int
    created_at: datetime

    @classmethod
    def of(cls, row: OutboxRow) -> Claimed:
        return cls(
            row.id,
            row.key,
            row.kind,
            row.event,
            row.plugin,
            row.hook,
            row.subject_model,
            row.subject_id,
            list(row.relations),
            dict(row.args),
            row.ordering_key,
            row.attempts,
            row.attempt_limit,
            row.created_at,
        )


@dataclass(frozen=True, slots=True)
class DeliveryCall:
    """One attempt as a kind's runner sees it: the row, the reloaded object, the arguments."""

    registry: PluginRegistry
    row: Claimed
    delivery: Delivery
    subject: Any
    args: dict[str, Any]


Runner = Callable[[DeliveryCall], Awaitable[None]]
"""Carries out one attempt of a kind of delivery; raising makes the attempt fail."""

_RUNNERS: dict[str, Runner] = {}


def register_kind(kind: str, runner: Runner) -> None:
    """Say how rows of ``kind`` are delivered (``after_commit`` is built in)."""
    _RUNNERS[kind] = runner


class DeliveryImpossible(Exception):
    """This attempt cannot run (hook gone, object deleted); it counts as a failed attempt."""


# -- writing rows ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Written:
    """A row written claimed for this instance, with the object and arguments it was
    written for: the committing instance delivers with them, without reloading."""

    row: Claimed
    subject: Any
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Buffered:
    """A workflow's row not written yet: :func:`commit` writes it with the COMMIT."""

    fields: dict[str, Any]
    subject: Any
    args: dict[str, Any]


@dataclass(slots=True)
class _Scope:
    """The rows one :func:`transaction` wrote, handed to the deliverer once it committed,
    and the workflow's rows it still has to write (with the COMMIT, :func:`commit`)."""

    claimed: list[_Written] = field(default_factory=list)
    deferred: int = 0
    conn: BaseDBAsyncClient | None = None
    outbox: Outbox | None = None
    buffered: list[_Buffered] = field(default_factory=list)


_SCOPE: ContextVar[_Scope | None] = ContextVar("isp_outbox_scope", default=None)
_CURRENT: ContextVar[Outbox | None] = ContextVar("isp_outbox", default=None)


def bind(outbox: Outbox) -> Token[Outbox | None]:
    """Make ``outbox`` the one that rows written in this context are delivered by."""
    return _CURRENT.set(outbox)


@asynccontextmanager
async def transaction() -> AsyncIterator[BaseDBAsyncClient]:
    """``in_transaction()`` whose after-commit rows are delivered right after the commit.

    The rows :func:`enqueue_after_commit` owes are written with the COMMIT: by
    :func:`commit` if the body commits itself (it must commit through it), else when the
    body ends. Without this context the rows are written at once and delivered by the
    next poll.
    """
    scope = _Scope()
    token = _SCOPE.set(scope)
    try:
        async with in_transaction() as conn:
            scope.conn = conn
            yield conn
            if scope.buffered:
                await commit(conn)
    finally:
        _SCOPE.reset(token)
    outbox = _CURRENT.get()
    if outbox is not None and (scope.claimed or scope.deferred):
        outbox.committed(scope.claimed, scope.deferred)


async def commit(conn: BaseDBAsyncClient) -> None:
    """Commit ``conn``'s transaction, writing the after-commit rows it owes in the same
    call to the database (SQLite: one hop to its thread for the INSERTs and the COMMIT).

    If writing a row fails nothing is committed; the transaction stays open for the
    caller to roll back, as after a failed COMMIT.
    """
    transaction = cast(TransactionalDBClient, conn)
    scope = _SCOPE.get()
    if scope is None or scope.conn is not conn or not scope.buffered:
        await transaction.commit()
        return
    outbox, buffered = scope.outbox, scope.buffered
    assert outbox is not None  # rows are buffered for the outbox bound when they were
    statement = _INSERTS[conn.capabilities.dialect]
    values = [_claimed_values(item.fields, outbox) for item in buffered]
    found = await cast(_CommitsAfter, conn).commit_after(statement, values)
    scope.buffered = []
    for item, answer in zip(buffered, found, strict=True):
        _handed(answer, item.fields, outbox, scope, item.subject, item.args)


class _CommitsAfter(Protocol):
    """The project's transaction clients (:mod:`isp.dbclients`): statements run with the
    COMMIT in one call."""

    async def commit_after(
        self, query: str, values: list[list[Any]]
    ) -> list[dict[str, Any]]: ...


async def enqueue(
    kind: str,
    *,
    event: str,
    plugin: str,
    hook: str,
    subject: Model | None = None,
    args: Mapping[str, Any] | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> OutboxRow:
    """Write one delivery of ``kind`` for ``plugin``'s function ``hook`` on ``event``.

    ``subject``: the event's object, stored as a reference and reloaded at delivery;
    ``args``: other named arguments (JSON values or model instances, stored as
    references; never a secret). ``conn``: the transaction the row belongs to (it is
    delivered only if that commits); None writes it at once. A row written outside
    :func:`transaction` is picked up by the poller.
    """
    written = await _write(kind, event, plugin, hook, subject, args, conn)
    if isinstance(written, OutboxRow):
        return written
    assert written is not None  # only enqueue_after_commit's rows are buffered
    # written claimed in a transaction (the workflows' path builds no instance): read back
    return await OutboxRow.get(id=written.row.id, using_db=conn)


async def _write(
    kind: str,
    event: str,
    plugin: str,
    hook: str,
    subject: Model | None,
    args: Mapping[str, Any] | None,
    conn: BaseDBAsyncClient | None,
    *,
    buffer: bool = False,
) -> OutboxRow | _Written | None:
    """:func:`enqueue`, without building a model instance for a row written claimed in
    a :func:`transaction` (the workflow's path: the instance is built after the commit).
    ``buffer``: a row for the transaction of the enclosing :func:`transaction` is kept
    until its :func:`commit` writes it (None is returned)."""
    outbox = _CURRENT.get()
    scope = _SCOPE.get() if conn is not None else None
    kept = {name: value for name, value in (args or {}).items() if name != "db"}
    fields = _fields(kind, event, plugin, hook, subject, kept, outbox)
    if outbox is None or scope is None or conn is None or outbox.holds(plugin):
        row = OutboxRow(**fields)
        await row.save(using_db=conn or get_connection("default"))
        if outbox is not None and conn is None:
            outbox.committed([], 1)
        elif scope is not None:
            scope.deferred += 1  # held: the poller delivers it once the plugin may run
        return row
    if buffer and scope.conn is conn:
        scope.outbox = outbox
        scope.buffered.append(_Buffered(fields, subject, kept))
        return None
    return await _insert_claimed(conn, fields, outbox, scope, subject, kept)


def _fields(
    kind: str,
    event: str,
    plugin: str,
    hook: str,
    subject: Model | None,
    kept: dict[str, Any],
    outbox: Outbox | None,
) -> dict[str, Any]:
    """The columns of a new row (unclaimed, attempt 0); no I/O."""
    model, subject_id, relations = _reference(subject)
    at = now()
    return {
        "key": str(uuid.uuid4()),
        "kind": kind,
        "event": event,
        "plugin": plugin,
        "hook": hook,
        "subject_model": model,
        "subject_id": subject_id,
        "relations": relations,
        "args": {name: _encode(value) for name, value in kept.items()},
        "ordering_key": f"{plugin}:{model}:{subject_id}" if model else f"{plugin}:-",
        "status": PENDING,
        "attempts": 0,
        "attempt_limit": outbox.attempts if outbox else Outbox.DEFAULT_ATTEMPTS,
        "next_attempt_at": at,
        "created_at": at,
    }


_COLUMNS: Final = (
    ("key", "VARCHAR(36)"),
    ("kind", "VARCHAR(32)"),
    ("event", "VARCHAR(64)"),
    ("plugin", "VARCHAR(64)"),
    ("hook", "VARCHAR(255)"),
    ("subject_model", "VARCHAR(128)"),
    ("subject_id", "VARCHAR(64)"),
    ("relations", "JSONB"),
    ("args", "JSONB"),
    ("ordering_key", "VARCHAR(255)"),
    ("status", "VARCHAR(16)"),
    ("attempt_limit", "INT"),
    ("next_attempt_at", "TIMESTAMP WITH TIME ZONE"),
    ("created_at", "TIMESTAMP WITH TIME ZONE"),
)
"""The columns ``_INSERTS`` takes as parameters 1-14 (15: the instance, 16: the lease's
end), with their PostgreSQL types (an INSERT ... SELECT does not infer them)."""

_INSERT: Final = (
    # whether an earlier row of this plugin for this object is unfinished: looked up
    # once (a materialized CTE), not once for each column that depends on it
    'WITH "earlier" AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM "outbox" WHERE '
    "\"status\" = 'pending' AND \"ordering_key\" = {ordering_key}) AS \"busy\") "
    'INSERT INTO "outbox" ({columns}, "attempts", "claimed_by", "lease_until") '
    'SELECT {values}, CASE WHEN "busy" THEN 0 ELSE 1 END, '
    'CASE WHEN "busy" THEN NULL ELSE {instance} END, '
    'CASE WHEN "busy" THEN NULL ELSE {lease} END FROM "earlier" '
    'RETURNING "id", "claimed_by"'
)


def _insert(placeholder: Callable[[int, str], str]) -> str:
    values = [placeholder(n, kind) for n, (_, kind) in enumerate(_COLUMNS, 1)]
    return _INSERT.format(
        columns=", ".join(f'"{name}"' for name, _ in _COLUMNS),
        values=", ".join(values),
        ordering_key=values[9],
        instance=placeholder(15, "VARCHAR(64)"),
        lease=placeholder(16, "TIMESTAMP WITH TIME ZONE"),
    )


_INSERTS: Final = {
    "sqlite": _insert(lambda n, _kind: f"?{n}"),
    "postgres": _insert(lambda n, kind: f"CAST(${n} AS {kind})"),
}
"""A row written claimed for an instance, unless an unfinished row of its plugin for its
object exists (then unclaimed, behind it): one statement, answering id and claim."""


def _json(value: list[str] | dict[str, Any]) -> str:
    return _dumps(value) if value else ("[]" if isinstance(value, list) else "{}")


async def _insert_claimed(
    conn: BaseDBAsyncClient,
    fields: dict[str, Any],
    outbox: Outbox,
    scope: _Scope,
    subject: Any,
    args: dict[str, Any],
) -> OutboxRow | _Written:
    """Write the row claimed for ``outbox``, unless an unfinished row of its plugin for
    its object exists: one statement, so the workflow pays one round trip and builds
    no model instance. A claimed row is handed to ``scope`` (delivered after the
    commit); one queued behind the earlier row is returned as a model instance."""
    values = _claimed_values(fields, outbox)
    found = (await conn.execute_query_dict(_INSERTS[conn.capabilities.dialect], values))[0]
    return _handed(found, fields, outbox, scope, subject, args)


def _claimed_values(fields: dict[str, Any], outbox: Outbox) -> list[Any]:
    """The parameters of ``_INSERTS`` for a row written claimed by ``outbox``."""
    at = fields["created_at"]
    lease_until = at + timedelta(seconds=outbox.lease)
    return [
        fields["key"],
        fields["kind"],
        fields["event"],
        fields["plugin"],
        fields["hook"],
        fields["subject_model"],
        fields["subject_id"],
        _json(fields["relations"]),
        _json(fields["args"]),
        fields["ordering_key"],
        PENDING,
        fields["attempt_limit"],
        at,
        at,
        outbox.instance,
        lease_until,
    ]


def _handed(
    found: dict[str, Any],
    fields: dict[str, Any],
    outbox: Outbox,
    scope: _Scope,
    subject: Any,
    args: dict[str, Any],
) -> OutboxRow | _Written:
    """What ``_INSERTS`` answered for a row: claimed, it is handed to ``scope``; queued
    behind an earlier row, it is returned as a model instance."""
    at = fields["created_at"]
    if found["claimed_by"] is None:  # an earlier delivery to this plugin for this object
        scope.deferred += 1
        outbox.note_waiting(fields["ordering_key"])
        row = OutboxRow(id=found["id"], **fields)
        row._saved_in_db = True
        return row
    claimed = Claimed(
        found["id"],
        fields["key"],
        fields["kind"],
        fields["event"],
        fields["plugin"],
        fields["hook"],
        fields["subject_model"],
        fields["subject_id"],
        fields["relations"],
        fields["args"],
        fields["ordering_key"],
        1,
        fields["attempt_limit"],
        at,
    )
    written = _Written(claimed, subject, args)
    scope.claimed.append(written)
    return written


async def enqueue_after_commit(
    registry: PluginRegistry, event: str, subject: Any, conn: BaseDBAsyncClient, **extra: Any
) -> None:
    """One row per enabled after-commit hook of ``event``, in the workflow's transaction."""
    for entry in registry.after_commit_hooks(event):
        await _write(
            AFTER_COMMIT, event, entry.plugin, entry.function, subject, extra, conn, buffer=True
        )


def _reference(subject: Model | None) -> tuple[str | None, str | None, list[str]]:
    if subject is None:
        return None, None, []
    if not isinstance(subject, Model) or subject.pk is None:
        raise TypeError(f"outbox: the subject must be a saved model instance, not {subject!r}")
    meta: Any = subject._meta
    loaded = [name for name in sorted(meta.fk_fields) if _loaded(subject, name)]
    return f"{meta.app}.{type(subject).__name__}", str(subject.pk), loaded


def _loaded(obj: Model, relation: str) -> bool:
    return isinstance(getattr(obj, f"_{relation}", None), Model)


def _encode(value: Any) -> Any:
    """A JSON value for ``value``; model instances become references (reloaded later)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Model):
        model, pk, _ = _reference(value)
        return {_REF: model, "id": pk}
    if isinstance(value, Enum):
        return _encode(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_encode(v) for v in value]
    raise TypeError(f"outbox: cannot store a {type(value).__name__} argument")


async def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [await _decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_REF, "id"}:
            return await _load(value[_REF], value["id"], [])
        return {k: await _decode(v) for k, v in value.items()}
    return value


async def _load(model_label: str, pk: str, relations: list[str]) -> Model:
    app, _, name = model_label.partition(".")
    try:
        model = Tortoise.apps[app][name]
    except KeyError:
        raise DeliveryImpossible(f"model {model_label} is not loaded") from None
    pk_field: Any = model._meta.pk
    query = model.filter(pk=pk_field.to_python_value(pk))
    if relations:
        query = query.select_related(*relations)
    found: Model | None = await query.first()
    if found is None:
        raise DeliveryImpossible(f"{model_label} {pk} no longer exists")
    return found


def now() -> datetime:
    return datetime.now(UTC)


# -- delivering rows ---------------------------------------------------------------------


async def _run_after_commit(call: DeliveryCall) -> None:
    row = call.row
    entry = call.registry.after_commit_entry(row.event, row.plugin, row.hook)
    if entry is None:
        raise DeliveryImpossible(
            f"plugin {row.plugin!r} has no enabled after-commit hook {row.hook} for {row.event}"
        )
    kwargs = {**call.args, "delivery": call.delivery, "db": get_connection("default")}
    result = await call.registry.call(entry, row.event, (call.subject,), kwargs)
    if result.error is not None:
        raise result.error


register_kind(AFTER_COMMIT, _run_after_commit)


class Outbox:
    """One instance's deliverer: delivers what it committed at once, polls for the rest."""

    DEFAULT_ATTEMPTS: Final = 5

    def __init__(self, settings: Settings, registry: PluginRegistry) -> None:
        self.registry = registry
        self.attempts = settings.outbox_attempts
        self.lease = settings.outbox_lease
        self.backoff = settings.outbox_backoff
        self.poll_interval = settings.outbox_poll_interval
        self.skip_locked = not settings.is_sqlite
        self.single_process = settings.is_sqlite
        self.instance = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._waiting: Counter[str] = Counter()  # ordering keys with rows queued behind one
        self._next_retry = float("inf")
        self._stopping = False
        self.keep_days = settings.outbox_keep_days
        self._next_prune = 0.0
        self._acks: list[Claimed] = []
        self._flusher: asyncio.Task[None] | None = None
        registry.on_release(lambda _plugin: self._wake.set())  # held rows are due

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Release dead claims (SQLite: this is the only process) and start polling."""
        if self.single_process:
            await OutboxRow.filter(status=PENDING, claimed_by__not_isnull=True).update(
                claimed_by=None, lease_until=None
            )
        self._stopping = False
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling, cancel deliveries in flight and release their claims.

        The poller ends after the claim it may be in (a claim cut by a cancellation
        would leave its transaction to the pool); it is cancelled only if that hangs.
        """
        if self._poller is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._poller), timeout=STOP_WAIT)
            except TimeoutError:
                self._poller.cancel()
                with suppress(asyncio.CancelledError):
                    await self._poller
            self._poller = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()
        with suppress(Exception):
            await OutboxRow.filter(status=PENDING, claimed_by=self.instance).update(
                claimed_by=None, lease_until=None
            )

    # -- after a commit ----------------------------------------------------------------

    def committed(self, claimed: list[_Written], deferred: int) -> None:
        """Deliver the rows a committed transaction wrote already claimed for us."""
        for written in claimed:
            self._spawn(written)
        if deferred:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def holds(self, plugin: str) -> bool:
        """A quarantined plugin's deliveries wait, pending with their attempts untouched,
        until it is enabled again: its code is not run meanwhile, and a row is not
        burnt to ``failed`` by a plugin the service itself stopped."""
        return self.registry.quarantined(plugin) is not None

    def _spawn(self, item: Claimed | _Written) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(item))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) == CONCURRENCY - 1:
            self._wake.set()  # a slot came free: the poller may claim again

    # -- the poller --------------------------------------------------------------------

    async def _poll(self) -> None:
        while not self._stopping:
            self._wake.clear()  # a wake from now on is not lost: the wait below sees it
            free = min(BATCH, CONCURRENCY - len(self._tasks))
            rows: list[OutboxRow] = []
            if free > 0:
                try:
                    rows = await self.claim(free)
                except asyncio.CancelledError:
                    raise
                except DatabaseUnavailable:
                    pass  # logged once by the database client; claimed again at the next poll
                except Exception:  # noqa: BLE001 - a database blip: log, retry at the next poll
                    log.exception("outbox claim failed")
            for row in rows:
                self._spawn(Claimed.of(row))
            if self._stopping:
                break
            if rows and len(rows) >= free:
                continue  # more may be due: claim again as slots free up
            if monotonic() >= self._next_prune:
                self._next_prune = monotonic() + PRUNE_EVERY
                await self.prune()
            wait = self.poll_interval
            if self._next_retry != float("inf"):
                wait = max(0.0, min(wait, self._next_retry - monotonic()))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            if self._next_retry <= monotonic():
                self._next_retry = float("inf")

    async def prune(self) -> None:
        """Forget delivered rows older than ``ISP_OUTBOX_KEEP_DAYS`` (the poller, once per
        PRUNE_EVERY seconds; every instance may: deleting twice is harmless)."""
        before = now() - timedelta(days=self.keep_days)
        try:
            await OutboxRow.filter(status=DELIVERED, delivered_at__lt=before).delete()
        except DatabaseUnavailable:
            return  # logged once by the database client; the next round prunes
        except Exception:  # noqa: BLE001 - a database blip: the next round prunes
            log.exception("outbox: pruning delivered rows failed")

    async def claim(self, limit: int = BATCH) -> list[OutboxRow]:
        """Claim due rows no other instance holds, first of their object's queue only."""
        at = now()
        held = self.registry.quarantined_plugins()
        async with in_transaction() as conn:
            query = (
                OutboxRow.filter(status=PENDING, next_attempt_at__lte=at)
                .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=at))
                .order_by("id")
                .limit(limit)
                .using_db(conn)
            )
            if held:
                query = query.exclude(plugin__in=held)
            if self.skip_locked:
                query = query.select_for_update(skip_locked=True)
            candidates = await query
            if not candidates:
                return []
            keys = {row.ordering_key for row in candidates}
            firsts = (
                await OutboxRow.filter(status=PENDING, ordering_key__in=keys)
                .using_db(conn)
                .group_by("ordering_key")
                .annotate(first=Min("id"))
                .values_list("first", flat=True)
            )
            first_ids = set(firsts)
            rows = [row for row in candidates if row.id in first_ids]
            if not rows:
                return []
            lease_until = at + timedelta(seconds=self.lease)
            await (
                OutboxRow.filter(id__in=[row.id for row in rows])
                .using_db(conn)
                .update(
                    claimed_by=self.instance, lease_until=lease_until, attempts=F("attempts") + 1
                )
            )
        for row in rows:
            row.attempts += 1
            row.claimed_by = self.instance
            row.lease_until = lease_until
            if self._waiting[row.ordering_key]:
                self._waiting[row.ordering_key] -= 1
                if not self._waiting[row.ordering_key]:
                    del self._waiting[row.ordering_key]
        return rows

    # -- one attempt ---------------------------------------------------------------------

    async def _deliver(self, item: Claimed | _Written) -> None:
        written = item if isinstance(item, _Written) else None
        row = item.row if isinstance(item, _Written) else item
        async with self._slots:
            if self.holds(row.plugin):  # quarantined since the claim: not an attempt
                await self._release(row)
                return
            error: BaseException | None = None
            started = monotonic()
            try:
                await self._attempt(row, written)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
                error = exc
            await self._settle(row, error, monotonic() - started)

    async def _attempt(self, row: Claimed, written: _Written | None) -> None:
        runner = _RUNNERS.get(row.kind)
        if runner is None:
            raise DeliveryImpossible(f"no runner for outbox rows of kind {row.kind!r}")
        if written is not None:  # just committed here: the objects are the committed ones
            subject, args = written.subject, dict(written.args)
        else:
            subject = None
            if row.subject_model is not None and row.subject_id is not None:
                subject = await _load(row.subject_model, row.subject_id, list(row.relations))
            args = {name: await _decode(value) for name, value in row.args.items()}
        delivery = Delivery(
            id=row.key,
            attempt=row.attempts,
            event=row.event,
            plugin=row.plugin,
            hook=row.hook,
            kind=row.kind,
            created_at=row.created_at,
        )
        await runner(DeliveryCall(self.registry, row, delivery, subject, args))

    async def _settle(self, row: Claimed, error: BaseException | None, duration: float) -> None:
        """Record the attempt, if our claim still holds (else another instance took over)."""
        if error is None:
            self._ack(row)
            log.info(
                "outbox delivered",
                extra={
                    "outbox_id": row.id,
                    "plugin": row.plugin,
                    "hook": row.hook,
                    "attempt": row.attempts,
                    "duration": round(duration, 4),
                },
            )
        else:
            reason = _reason(error)
            mine = OutboxRow.filter(id=row.id, claimed_by=self.instance, attempts=row.attempts)
            if row.attempts >= row.attempt_limit:
                done = await mine.update(
                    status=FAILED, last_error=reason, claimed_by=None, lease_until=None
                )
                log.error(
                    "outbox delivery failed for good",
                    extra={
                        "outbox_id": row.id,
                        "plugin": row.plugin,
                        "hook": row.hook,
                        "attempt": row.attempts,
                        "reason": reason,
                    },
                )
            else:
                delay = min(MAX_BACKOFF, self.backoff * 2 ** (row.attempts - 1))
                done = await mine.update(
                    last_error=reason,
                    next_attempt_at=now() + timedelta(seconds=delay),
                    claimed_by=None,
                    lease_until=None,
                )
                self._next_retry = min(self._next_retry, monotonic() + delay)
                self._wake.set()  # re-arm the poller's wait for the retry
                log.warning(
                    "outbox delivery failed, will retry",
                    extra={
                        "outbox_id": row.id,
                        "plugin": row.plugin,
                        "hook": row.hook,
                        "attempt": row.attempts,
                        "retry_in": delay,
                        "reason": reason,
                    },
                )
            if not done:
                log.warning(
                    "outbox claim lapsed before the attempt ended",
                    extra={"outbox_id": row.id, "attempt": row.attempts},
                )
            if self._waiting[row.ordering_key]:
                self._wake.set()  # a row of ours waits behind this one

    async def _release(self, row: Claimed) -> None:
        """Give a claimed row back untried: its attempt does not count."""
        try:
            await OutboxRow.filter(
                id=row.id, claimed_by=self.instance, attempts=row.attempts
            ).update(attempts=F("attempts") - 1, claimed_by=None, lease_until=None)
        except Exception:  # noqa: BLE001 - the claim lapses; that attempt is then counted
            log.exception("outbox: releasing a held delivery failed", extra={"outbox_id": row.id})
        log.info(
            "outbox delivery held: plugin quarantined",
            extra={"outbox_id": row.id, "plugin": row.plugin, "hook": row.hook},
        )

    def _ack(self, row: Claimed) -> None:
        """Record a success soon, together with those that follow within ACK_DELAY:
        one write for many deliveries. A crash before it means one more delivery."""
        self._acks.append(row)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(ACK_DELAY)
        finally:
            self._flusher = None
        await self._flush()

    async def _flush(self) -> None:
        rows, self._acks = self._acks, []
        if not rows:
            return
        conn = get_connection("default")
        values = [now(), self.instance, _ids(conn, [r.id for r in rows])]
        try:
            await conn.execute_query(_DELIVERED[conn.capabilities.dialect], values)
        except DatabaseUnavailable:
            # logged once by the database client; the claims lapse, the rows go out again
            log.warning("outbox: recording %s deliveries failed: database unavailable", len(rows))
            return
        except Exception:  # noqa: BLE001 - the claims lapse and the rows are delivered again
            log.exception("outbox: recording %s deliveries failed", len(rows))
            return
        if any(self._waiting[r.ordering_key] for r in rows):
            self._wake.set()  # rows of ours wait behind these

    def note_waiting(self, ordering_key: str) -> None:
        """A row was written behind an unfinished one for the same plugin and object."""
        self._waiting[ordering_key] += 1


_DELIVERED: Final = {
    dialect: (
        f"UPDATE \"outbox\" SET \"status\" = '{DELIVERED}', \"delivered_at\" = {p}1, "
        f'"claimed_by" = NULL, "lease_until" = NULL WHERE "claimed_by" = {p}2 AND {ids}'
    )
    for dialect, p, ids in (
        ("sqlite", "?", '"id" IN (SELECT "value" FROM json_each(?3))'),
        ("postgres", "$", '"id" = ANY(CAST($3 AS BIGINT[]))'),
    )
}
"""Successes recorded: one statement whatever their number (prepared once per connection)."""


def _ids(conn: BaseDBAsyncClient, ids: list[int]) -> Any:
    """``ids`` as ``_DELIVERED`` takes them: a JSON array on SQLite, an array on PostgreSQL."""
    return _dumps(ids) if conn.capabilities.dialect == "sqlite" else ids


def _reason(error: BaseException) -> str:
    if isinstance(error, PluginError):
        return error.detail
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, DeliveryImpossible) else text
