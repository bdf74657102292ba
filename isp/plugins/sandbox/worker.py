"""The sandboxed side: ``python -m isp.plugins.sandbox.worker CONFIG_JSON``.

Started by a launcher inside the sandbox. It limits itself (setrlimit, then a user of
its own when started as root) *before* any plugin code runs, imports the plugin under
its usual name with the usual loader, and serves hook calls over the protocol socket.
Hooks receive read-only snapshots of the event's objects and a ``db`` that is the
plugin's key-value store, whose every operation the host executes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from isp.plugins.sandbox.protocol import read_message, write_message

MB = 1024 * 1024
SECRET_FIELD = "_password"  # isp.plugins.snapshots.SECRET_FIELD (not imported: no tortoise)


class Snapshot:
    """A read-only view of one object the host sent: its attributes, nothing more."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_fields", {k: frozen(v) for k, v in fields.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"snapshot attribute {name!r} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"snapshot attribute {name!r} is read-only")

    def __dir__(self) -> list[str]:
        return sorted(k for k in self._fields if k != SECRET_FIELD)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._fields)))

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._fields.items() if k != SECRET_FIELD}
        return f"Snapshot({shown!r})"

    def reveal_password(self) -> str:
        """The secret in clear, when the plugin was granted ``secrets``; never log it."""
        secret = self._fields.get(SECRET_FIELD)
        if secret is None:
            raise PermissionError(
                "reveal_password() needs the manifest's \"permissions\": {\"secrets\": true}, "
                "granted at install (?grant=secrets)"
            )
        return str(secret)


def frozen(value: Any) -> Any:
    """Objects become snapshots, lists tuples; scalars stay as they are."""
    if isinstance(value, Mapping):
        return Snapshot(value)
    if isinstance(value, list | tuple):
        return tuple(frozen(item) for item in value)
    return value


class KeyValue:
    """The ``db`` a sandboxed hook receives: its plugin's own key-value store, via the host."""

    def __init__(self, worker: Worker, call: int) -> None:
        self._worker = worker
        self._call = call

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self._worker.kv(self._call, "get", key)
        return default if value is None else value

    async def put(self, key: str, value: Any) -> None:
        await self._worker.kv(self._call, "put", key, value)

    async def delete(self, key: str) -> None:
        await self._worker.kv(self._call, "delete", key)


class Worker:
    """Serves one plugin's hooks: one task per call, sync hooks in a thread."""

    def __init__(self, writer: asyncio.StreamWriter, hooks: dict[str, Any]) -> None:
        self.writer = writer
        self.hooks = hooks
        self._kv_ids = 0
        self._kv: dict[int, asyncio.Future[Any]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def kv(self, call: int, op: str, key: str, value: Any = None) -> Any:
        if not isinstance(key, str) or not key:
            raise ValueError("a key-value key is a non-empty string")
        self._kv_ids += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._kv[self._kv_ids] = future
        write_message(self.writer, {"type": "kv", "id": self._kv_ids, "call": call, "op": op,
                                    "key": key, "value": value})  # fmt: skip
        return await future

    def kv_reply(self, message: dict[str, Any]) -> None:
        future = self._kv.pop(int(message["id"]), None)
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(RuntimeError(str(message["error"])))
        else:
            future.set_result(message.get("value"))

    def start_call(self, message: dict[str, Any]) -> None:
        call_id = int(message["id"])
        self._tasks[call_id] = asyncio.create_task(self.call(message))
        self._tasks[call_id].add_done_callback(lambda _: self._tasks.pop(call_id, None))

    def cancel(self, message: dict[str, Any]) -> None:
        task = self._tasks.get(int(message["id"]))
        if task is not None:
            task.cancel()

    async def call(self, message: dict[str, Any]) -> None:
        from isp.errors import PluginError

        call_id = int(message["id"])
        try:
            entry = self.hooks[message["hook"]]
            named = {k: frozen(v) for k, v in dict(message.get("named") or {}).items()}
            named["db"] = KeyValue(self, call_id)
            subject = frozen(message.get("subject"))
            kwargs = entry.arguments(named)
            if entry.is_async:
                value = await entry.func(subject, **kwargs)
            else:
                value = await asyncio.to_thread(entry.func, subject, **kwargs)
            reply: dict[str, Any] = {"type": "result", "id": call_id, "value": value}
            try:
                write_message(self.writer, reply)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"the hook's result cannot leave the sandbox: {exc}") from None
        except asyncio.CancelledError:
            write_message(self.writer, {"type": "cancelled", "id": call_id})
            raise
        except PluginError as exc:
            status, detail = exc.status_code, exc.detail
            write_message(self.writer, {"type": "error", "id": call_id, "kind": "plugin",
                                        "status": status, "message": detail})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any other failure is the hook's crash (502)
            write_message(self.writer, {"type": "error", "id": call_id, "kind": "crash",
                                        "message": f"{type(exc).__name__}: {exc}"})  # fmt: skip


class HostLog(logging.Handler):
    """Sends the plugin's log records to the host, which logs them with the plugin's name."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(message)s"))  # level and logger travel apart
        self.writer = writer
        self.loop = asyncio.get_running_loop()

    def emit(self, record: logging.LogRecord) -> None:
        message = {"type": "log", "level": record.levelname, "logger": record.name,
                   "message": self.format(record)[:2000]}  # fmt: skip
        self.loop.call_soon_threadsafe(write_message, self.writer, message)


def limit(limits: Mapping[str, int], uid: int | None) -> None:
    """Apply the limits, then become the plugin's own user (root started us)."""
    memory = int(limits["memory_mb"]) * MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    files = int(limits["files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    processes = int(limits["processes"])
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


class Callback:
    """A lifecycle callback (``on_load`` ...) served like a hook: no object, no arguments."""

    def __init__(self, func: Any) -> None:
        from isp.plugins.hooks import is_async

        self.is_async = is_async(func)
        self._callback = func

    def func(self, subject: Any = None) -> Any:
        return self._callback()

    @staticmethod
    def arguments(named: Mapping[str, Any]) -> dict[str, Any]:
        return {}


CALLBACK_PREFIX = "plugin."  # "plugin.on_load": what the host calls a callback by


def load(name: str, folder: str) -> tuple[dict[str, Any], dict[str, Callback], Any]:
    """Import the plugin with the service's loader: same module names, same checks.

    Returns its hooks by function, its lifecycle callbacks by ``plugin.<callback>`` and
    the JSON schema of its settings model (None without one), from which the host
    rebuilds the model it validates the operator's values with."""
    from pathlib import Path

    from isp.plugins.discovery import describe
    from isp.plugins.loader import load as load_plugin
    from isp.plugins.specs import SPECS_BY_NAME

    source = describe(Path(folder))
    if source.error is not None or source.manifest is None:
        raise RuntimeError(source.error or "no manifest")
    manifest = source.manifest
    known = set(SPECS_BY_NAME) | set(manifest.events) | {h.name for h in manifest.hooks}
    loaded = load_plugin(source, known)
    if loaded.name != name:
        raise RuntimeError(f"folder holds plugin {loaded.name!r}, expected {name!r}")
    callbacks = {}
    for callback in ("on_load", "on_enable", "on_disable", "on_unload"):
        found = loaded.plugin.callback(callback)
        if found is not None:
            callbacks[f"{CALLBACK_PREFIX}{callback}"] = Callback(found)
    model = loaded.plugin.settings_model
    try:
        schema = None if model is None else model.model_json_schema()
    except Exception as exc:  # noqa: BLE001 - PydanticUserError and the like
        raise RuntimeError(
            f"its settings model cannot be described as a JSON schema ({exc}), which a "
            "sandboxed plugin's settings need: use JSON types"
        ) from None
    return {entry.function: entry for entry in loaded.entries}, callbacks, schema


def configure(name: str, values: Any) -> None:
    """Serve the settings the host sent (stored and environment values, secrets only
    with the grant); the plugin's own model validates them, as it does stored values."""
    from isp.plugins.settings import settings_store

    if isinstance(values, Mapping):
        settings_store.current().assign(name, values)


def _undo(entry: Any) -> dict[str, Any] | None:
    undo = entry.compensation
    return None if undo is None else {"function": undo.function, "is_async": undo.is_async}


async def serve(config: Mapping[str, Any]) -> int:
    sock = socket.socket(fileno=int(config["fd"]))
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    logging.basicConfig(level=logging.INFO, handlers=[HostLog(writer)])
    try:
        hooks, callbacks, schema = load(str(config["name"]), str(config["folder"]))
    except BaseException as exc:  # noqa: BLE001 - reported to the host, then the worker ends
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        write_message(writer, {"type": "fatal", "message": str(detail)})
        await writer.drain()
        return 3
    listed = [{"function": f, "event": e.event, "timeout": e.timeout, "is_async": e.is_async,
               "after_commit": e.after_commit, "undo": _undo(e)}
              for f, e in hooks.items()]  # fmt: skip
    # a compensation is called by its function's name too (the host undoes through it)
    hooks.update({u.function: u for e in list(hooks.values()) if (u := e.compensation)})
    worker = Worker(writer, {**hooks, **callbacks})
    lifecycle = [{"function": f, "is_async": c.is_async} for f, c in callbacks.items()]
    write_message(writer, {"type": "ready", "hooks": listed, "callbacks": lifecycle,
                           "settings": schema})  # fmt: skip
    while (message := await read_message(reader)) is not None:
        if message["type"] == "call":
            worker.start_call(message)
        elif message["type"] == "settings":
            configure(str(config["name"]), message.get("values"))
        elif message["type"] == "kv_reply":
            worker.kv_reply(message)
        elif message["type"] == "cancel":
            worker.cancel(message)
        await writer.drain()
    return 0


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    limit(config["limits"], config.get("uid"))
    try:
        return asyncio.run(serve(config))
    except Exception:  # noqa: BLE001 - the host logs stderr; the exit code says it failed
        traceback.print_exc()
        return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv))
