"""The router vendors the service knows.

Its own module because both sides need it: the core stores it on every device, and a
plugin's manifest declares which of these its hooks drive (``isp/plugins/`` never
imports ``isp/core/``).
"""

from __future__ import annotations

from enum import StrEnum


class Vendor(StrEnum):
    MIKROTIK = "mikrotik"
