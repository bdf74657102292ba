"""The only writer of ``PluginRecord``, of the generation counter and of plugin audit entries.

Each change is one transaction: the record, its audit entry and the bump of
``PluginGeneration`` (which tells the other instances to converge) commit together or
not at all. Refused upload attempts are audited here too, with the zip's sha256 and the
reason, so every attempt leaves a trace.
"""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from isp import audit
from isp.plugins.discovery import PluginSource
from isp.plugins.manifest import SLUG
from isp.plugins.models import PluginGeneration, PluginRecord


async def sync_local(sources: list[PluginSource]) -> dict[str, PluginRecord]:
    """Every record; one created (enabled, source local) for each folder seen first here."""
    records = {r.name: r for r in await PluginRecord.all()}
    for source in sources:
        if not SLUG.match(source.name):
            continue
        version = source.manifest.version if source.manifest else None
        record = records.get(source.name)
        if record is None:
            record, _ = await PluginRecord.get_or_create(
                name=source.name, defaults={"version": version, "source": "local"}
            )
            records[source.name] = record
        elif record.source == "removed":
            # an uninstalled plugin's folder is back, as a local plugin
            await PluginRecord.filter(name=source.name).update(
                source="local", version=version, enabled=True, sha256=None, tree_sha256=None
            )
            record.source, record.enabled, record.sha256, record.tree_sha256 = (
                "local",
                True,
                None,
                None,
            )
            record.version = version
        elif record.source == "local" and version and record.version != version:
            await PluginRecord.filter(name=source.name).update(version=version)
            record.version = version
    return records


async def set_enabled(
    name: str,
    enabled: bool,
    *,
    version: str | None,
    actor: str | None,
    sha256: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """The enabled flag, its audit entry (when an actor asked) and the generation.

    Enabling also lifts a quarantine: that is how an admin takes the plugin back.
    """
    changes: dict[str, Any] = {"enabled": enabled}
    if enabled:
        changes["quarantined"] = None
    async with in_transaction() as conn:
        updated = await PluginRecord.filter(name=name).using_db(conn).update(**changes)
        if not updated:
            await PluginRecord.create(name=name, version=version, enabled=enabled, using_db=conn)
        if actor is not None:
            await audit.record(
                conn,
                actor,
                "enable" if enabled else "disable",
                name,
                from_version=version,
                to_version=version,
                sha256=sha256,
                detail=detail or {},
            )
        await PluginGeneration.bump(conn)


async def quarantined(name: str, reason: str) -> None:
    """The plugin is quarantined: recorded, audited (actor ``system``), the others told."""
    async with in_transaction() as conn:
        await PluginRecord.filter(name=name).using_db(conn).update(quarantined=reason)
        await audit.record(conn, "system", "quarantine", name, detail={"reason": reason[:1000]})
        await PluginGeneration.bump(conn)


async def installed(
    name: str,
    *,
    version: str,
    sha256: str,
    tree_sha256: str,
    enabled: bool,
    actor: str,
    action: str,
    from_version: str | None,
    trust: dict[str, Any] | None = None,
    granted: tuple[str, ...] = (),
) -> None:
    """An uploaded version is serving: record it, audit it, tell the other instances.

    ``trust``: its signature status and signer, kept in the audit entry; ``granted``: the
    permissions the operator granted it, kept in the record and the audit entry."""
    async with in_transaction() as conn:
        await PluginRecord.update_or_create(
            name=name,
            defaults={
                "version": version,
                "sha256": sha256,
                "tree_sha256": tree_sha256,
                "source": "upload",
                "enabled": enabled,
                "granted": list(granted),
            },
            using_db=conn,
        )
        detail = {
            "outcome": "installed" if action == "install" else "upgraded",
            **(trust or {}),
            "granted": list(granted),
        }
        await _audit_upload(conn, actor, action, name, sha256, from_version, version, detail)
        await PluginGeneration.bump(conn)


async def uninstalled(name: str, *, version: str | None, actor: str, purge: bool) -> None:
    """The plugin is gone: its record forgotten (purge) or kept as ``removed``."""
    async with in_transaction() as conn:
        if purge:
            await PluginRecord.filter(name=name).using_db(conn).delete()
        else:
            await (
                PluginRecord.filter(name=name)
                .using_db(conn)
                .update(
                    source="removed", version=None, sha256=None, tree_sha256=None, enabled=False
                )
            )
        await audit.record(
            conn, actor, "uninstall", name, from_version=version, detail={"purge": purge}
        )
        await PluginGeneration.bump(conn)


async def settings_changed(
    conn: BaseDBAsyncClient,
    name: str,
    record: PluginRecord | None,
    raw: dict[str, Any],
    changed: list[str],
    actor: str | None,
) -> None:
    """New stored settings, in the caller's transaction (field names audited, never values)."""
    if record is None:
        await PluginRecord.create(name=name, settings=raw, using_db=conn)
    else:
        record.settings = raw
        await record.save(using_db=conn, update_fields=["settings"])
    await PluginGeneration.bump(conn)
    if actor is not None:
        await audit.record(conn, actor, "settings", name, detail={"fields": changed})


async def attempt(
    actor: str,
    action: str,
    name: str | None,
    *,
    sha256: str,
    outcome: str,
    from_version: str | None = None,
    to_version: str | None = None,
    reason: str | None = None,
    status: int | None = None,
) -> None:
    """An upload attempt that changed nothing (refused, unchanged, interrupted)."""
    detail: dict[str, Any] = {"outcome": outcome}
    if reason is not None:
        detail["reason"] = reason[:1000]
    if status is not None:
        detail["status"] = status
    async with in_transaction() as conn:
        await _audit_upload(conn, actor, action, name, sha256, from_version, to_version, detail)


async def _audit_upload(
    conn: BaseDBAsyncClient,
    actor: str,
    action: str,
    name: str | None,
    sha256: str,
    from_version: str | None,
    to_version: str | None,
    detail: dict[str, Any],
) -> None:
    """One upload attempt's entry: which zip (sha256), which versions, what came of it."""
    await audit.record(
        conn,
        actor,
        action,
        name,
        from_version=from_version,
        to_version=to_version,
        sha256=sha256,
        detail=detail,
    )
