"""The long-lived parts one app instance owns, reachable from a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quart import current_app

from isp.config import Settings
from isp.crypto import SecretBox
from isp.storage import ObjectStore

if TYPE_CHECKING:
    from isp.core.jobs import FleetJobs
    from isp.core.schedules import BackupSchedule
    from isp.metrics import Metrics
    from isp.queue import TaskQueue

EXTENSION_KEY = "isp"


@dataclass
class Components:
    settings: Settings
    store: ObjectStore
    jobs: FleetJobs
    queue: TaskQueue
    schedule: BackupSchedule
    metrics: Metrics
    box: SecretBox | None = None
    plugins: Any = None


def components() -> Components:
    found = current_app.extensions[EXTENSION_KEY]
    assert isinstance(found, Components)
    return found
