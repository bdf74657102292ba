"""Sandboxed plugins: each runs in a worker process of its own, confined by a launcher.

``SandboxedPlugin`` (host.py) is the seam the runtime uses: ``start``, ``call``, ``stop``.
"""

from __future__ import annotations

from isp.plugins.sandbox.errors import PluginQuarantined, SandboxUnavailable, WorkerCrashed
from isp.plugins.sandbox.host import KeyValueStore, MemoryStore, SandboxedPlugin, SandboxHook
from isp.plugins.sandbox.launcher import BubblewrapLauncher, Launcher, Limits, WorkerSpec

__all__ = [
    "BubblewrapLauncher",
    "KeyValueStore",
    "Launcher",
    "Limits",
    "MemoryStore",
    "PluginQuarantined",
    "SandboxHook",
    "SandboxUnavailable",
    "SandboxedPlugin",
    "WorkerCrashed",
    "WorkerSpec",
]
