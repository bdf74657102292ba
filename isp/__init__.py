"""ISP Framework: an ISP's core records with a plugin system around its workflows."""

from __future__ import annotations

__version__ = "0.1.0"
