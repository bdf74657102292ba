"""Router backups: the ``/export`` text (:mod:`.export`), then the ``.backup`` (:mod:`.binary`).

The pains users of other tools report are the design brief here: a router's error text
saved as a "backup", exports silently cut short, secrets missing from v7 exports,
``.backup`` files left to fill the flash, and a failed binary step throwing away the good
export already fetched. So:

- a failing export step fails the backup (``step: "export"``), nothing stored, the last
  good backup kept;
- a failing binary step never discards the export: the error carries the export as a
  finished artifact and ``step: "binary"`` (:func:`~.errors.with_artifacts`); the core
  stores the export and reports the failure. No half ``.backup`` is ever returned and the
  file is removed from the router whatever happens.
"""

from __future__ import annotations

from typing import Any

from . import binary, export
from .errors import MikrotikError, with_artifacts
from .settings import MikrotikSettings
from .ssh import RouterSession

Artifact = dict[str, Any]


async def back_up(router: RouterSession, settings: MikrotikSettings) -> list[Artifact]:
    """Every artifact of one router, over one connection: export, then binary."""
    try:
        artifacts = [await export.take(router, settings)]
    except MikrotikError as exc:
        exc.extra.setdefault("step", "export")
        raise
    if settings.binary_backup:
        try:
            artifacts.append(await binary.take(router, settings))
        except MikrotikError as exc:
            with_artifacts(exc, "binary", artifacts)
            raise
    return artifacts
