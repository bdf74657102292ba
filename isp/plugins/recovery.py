"""Start-up after a crash: staging leftovers removed, interrupted upgrades finished or undone.

Before an upload promotes its folder, :func:`begin` writes a journal,
``ISP_PLUGINS_DIR/.intent-<name>.json`` (fsynced), naming the folder the old version goes
to, the zip stored and whether that object existed before. :func:`end` removes it once
the change is recorded or undone. A journal still there at start-up means the process
died in between; :func:`recover` then looks at the database, the one source of truth:

- the record names the new zip: the upgrade committed; the old folder is deleted;
- otherwise it is undone: the migrations the new version applied are undone with its
  own files (the journal names the migrations applied before), then the new files go,
  the old folder comes back, a zip stored for this attempt is deleted, and the audit log
  says ``interrupted``. A migration that cannot be undone (no backward operation) is
  logged and named in the audit entry; the old version then runs on the newer schema.

Dot folders left by a kill (``.staging-*``, ``.ready-*``, ``.failed-*``, ``.removing-*``,
``.upload-*``) are deleted; discovery never looks at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from isp.errors import ISPError
from isp.plugins import archive as zips
from isp.plugins import records, tables
from isp.plugins.loader import detach
from isp.plugins.models import PluginRecord
from isp.storage import ObjectStore, fsync_dir

log = logging.getLogger("isp.plugins.recovery")

INTENT_PREFIX: Final = ".intent-"
LEFTOVER_PREFIXES: Final = (".staging-", ".ready-", ".failed-", ".removing-", ".upload-")


@dataclass(frozen=True, slots=True)
class Intent:
    """An upload about to promote its folder: enough to finish or undo it after a kill."""

    name: str
    action: str
    actor: str
    sha256: str
    tree_sha256: str
    from_version: str | None
    to_version: str
    backup: str  # folder name in ISP_PLUGINS_DIR the old version is moved to
    object_key: str
    object_existed: bool
    # the plugin's migrations applied before; None in a journal that predates the field
    migrations_before: list[str] | None = None


def _path(plugins_dir: Path, name: str) -> Path:
    return plugins_dir / f"{INTENT_PREFIX}{name}.json"


def _write(plugins_dir: Path, intent: Intent) -> None:
    path = _path(plugins_dir, intent.name)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(asdict(intent), fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(plugins_dir)


async def begin(plugins_dir: Path, intent: Intent) -> None:
    await asyncio.to_thread(_write, plugins_dir, intent)


async def end(plugins_dir: Path, name: str) -> None:
    await asyncio.to_thread(_path(plugins_dir, name).unlink, missing_ok=True)


def _intents(plugins_dir: Path) -> list[Intent]:
    found: list[Intent] = []
    if not plugins_dir.is_dir():
        return found
    for path in sorted(plugins_dir.glob(f"{INTENT_PREFIX}*.json")):
        try:
            found.append(Intent(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            log.warning("unreadable upload journal %s removed", path)
            path.unlink(missing_ok=True)
    return found


def _remove_leftovers(plugins_dir: Path) -> list[str]:
    removed: list[str] = []
    if not plugins_dir.is_dir():
        return removed
    for child in plugins_dir.iterdir():
        if child.name.startswith(LEFTOVER_PREFIXES):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child.name)
    return removed


async def recover(plugins_dir: Path, store: ObjectStore, bucket: str) -> None:
    """Finish or undo every interrupted upload, then delete staging leftovers."""
    for intent in await asyncio.to_thread(_intents, plugins_dir):
        record = await PluginRecord.get_or_none(name=intent.name)
        committed = record is not None and record.sha256 == intent.sha256
        reason = "the service stopped in the middle of it; undone at start-up"
        if not committed:
            reason += await _undo_migrations(plugins_dir, intent)
        await asyncio.to_thread(_settle_folders, plugins_dir, intent, committed)
        if not committed:
            if not intent.object_existed:
                with contextlib.suppress(ISPError):
                    await store.delete(bucket, intent.object_key)
            await records.attempt(
                intent.actor,
                intent.action,
                intent.name,
                sha256=intent.sha256,
                outcome="interrupted",
                from_version=intent.from_version,
                to_version=intent.to_version,
                reason=reason,
            )
        log.warning(
            "plugin %s: interrupted %s %s -> %s %s at start-up",
            intent.name,
            intent.action,
            intent.from_version or "-",
            intent.to_version,
            "finished" if committed else "undone",
            extra={"plugin": intent.name, "outcome": "finished" if committed else "undone"},
        )
        await end(plugins_dir, intent.name)
    removed = await asyncio.to_thread(_remove_leftovers, plugins_dir)
    if removed:
        log.info("removed staging leftovers: %s", ", ".join(sorted(removed)))


def _promoted(plugins_dir: Path, intent: Intent) -> Path | None:
    """The new version's folder, if the kill came after it was promoted."""
    target = plugins_dir / intent.name
    if (plugins_dir / intent.backup).is_dir() and target.is_dir():
        return target  # an upgrade: the old version is aside, <name> is the new one
    if target.is_dir() and zips.tree_digest(target) == intent.tree_sha256:
        return target  # an install
    return None


async def _undo_migrations(plugins_dir: Path, intent: Intent) -> str:
    """Undo the migrations the interrupted version applied; what to add to the audit
    reason ("" when there was nothing to undo or it was undone)."""
    if intent.migrations_before is None:
        return ""
    folder = await asyncio.to_thread(_promoted, plugins_dir, intent)
    if folder is None:  # killed before the promotion: no migration of it ran
        return ""
    try:
        await tables.migrate_back(intent.name, folder, intent.migrations_before)
    except Exception as exc:  # noqa: BLE001 - the folders are put back regardless
        log.exception("plugin %s: migrations of the interrupted version not undone", intent.name)
        return (
            f"; its migrations could not be undone ({type(exc).__name__}: {exc}): the "
            "plugin's tables keep the newer schema"
        )
    finally:
        detach(intent.name)  # the old version must not find the new one's migration modules
    return ""


def _settle_folders(plugins_dir: Path, intent: Intent, committed: bool) -> None:
    target, backup = plugins_dir / intent.name, plugins_dir / intent.backup
    if committed:
        shutil.rmtree(backup, ignore_errors=True)
        return
    if backup.is_dir():  # the first rename happened: whatever is at <name> is the new one
        if target.exists():
            shutil.rmtree(target)
        os.rename(backup, target)
    elif target.is_dir() and zips.tree_digest(target) == intent.tree_sha256:
        shutil.rmtree(target)  # an install that never committed
    fsync_dir(plugins_dir)
