"""The long-lived parts one app instance owns, reachable from a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart import current_app

from isp.config import Settings
from isp.core.jobs import JobRunner
from isp.crypto import SecretBox
from isp.storage import ObjectStore

EXTENSION_KEY = "isp"


@dataclass
class Components:
    settings: Settings
    store: ObjectStore
    jobs: JobRunner
    box: SecretBox | None = None
    plugins: Any = None


def components() -> Components:
    found = current_app.extensions[EXTENSION_KEY]
    assert isinstance(found, Components)
    return found
