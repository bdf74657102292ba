"""``PluginRecord`` upkeep: the database's view of which plugins exist and are enabled."""

from __future__ import annotations

from isp.errors import PluginInvalid
from isp.plugins.discovery import PluginSource
from isp.plugins.manifest import SLUG
from isp.plugins.models import PluginRecord


async def sync_records(sources: list[PluginSource]) -> dict[str, PluginRecord]:
    """Create a record (enabled, source local) for each plugin seen for the first time."""
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
                source="local",
                version=version,
                enabled=True,
                sha256=None,
                tree_sha256=None,
            )
            record.source, record.enabled, record.sha256, record.tree_sha256 = (
                "local",
                True,
                None,
                None,
            )
        elif record.source == "local" and version and record.version != version:
            await PluginRecord.filter(name=source.name).update(version=version)
    return records


async def persist_enabled(
    name: str, source: PluginSource, enabled: bool, error: str | None = None
) -> None:
    """Store the enabled flag (every instance follows it; it survives restarts)."""
    if not SLUG.match(name):
        raise PluginInvalid(error or f"{name!r} is not a plugin name", plugin=name)
    updated = await PluginRecord.filter(name=name).update(enabled=enabled)
    if not updated:
        version = source.manifest.version if source.manifest else None
        await PluginRecord.create(name=name, version=version, enabled=enabled)
