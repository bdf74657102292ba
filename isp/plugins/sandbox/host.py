"""The service's side of a sandboxed plugin: ``SandboxedPlugin``.

It starts the plugin's worker through a launcher, sends it hook calls and answers its
key-value requests through a store the caller chooses per call (the integration passes
one bound to the workflow's transaction). A hook past its timeout gets its worker's
process group killed (SIGKILL) and a fresh worker; a worker that dies fails the calls in
flight with ``WorkerCrashed`` (502) and restarts with backoff; crashing ``crash_limit``
times within ``crash_window`` seconds quarantines the plugin until :meth:`reset`.
Everything is asyncio: nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from isp.errors import HookCrashed, HookTimeout, PluginError
from isp.plugins.sandbox.errors import PluginQuarantined, WorkerCrashed
from isp.plugins.sandbox.launcher import BubblewrapLauncher, Launcher, WorkerSpec
from isp.plugins.sandbox.protocol import ProtocolError, read_message, write_message

log = logging.getLogger("isp.plugins.sandbox")

State = Literal["stopped", "starting", "running", "quarantined"]
OUTPUT_LINE = 500  # characters of one stdout/stderr line that reach the log


class KeyValueStore(Protocol):
    """Where a sandboxed plugin's ``db.get/put/delete`` go; values are JSON."""

    async def get(self, key: str) -> Any: ...
    async def put(self, key: str, value: Any) -> None: ...
    async def delete(self, key: str) -> None: ...


class MemoryStore:
    """A store in a dict: for tests, benchmarks and plugins called outside a workflow."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.data.get(key)

    async def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass(frozen=True, slots=True)
class SandboxHook:
    """A hook the worker registered: what ``call`` is given as ``hook`` is ``function``."""

    function: str
    event: str
    timeout: float | None
    is_async: bool
    after_commit: bool = False
    undo: Mapping[str, Any] | None = None  # its compensation: {"function", "is_async"}

    def compensation(self) -> SandboxHook | None:
        """The compensation as a function the worker can be called with, if any."""
        if self.undo is None:
            return None
        return SandboxHook(str(self.undo["function"]), self.event, self.timeout,
                           bool(self.undo["is_async"]))  # fmt: skip


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[Any]
    store: KeyValueStore
    hook: str
    kv: set[asyncio.Task[None]] = field(default_factory=set)  # its db requests running


@dataclass(eq=False)
class _Process:
    """One running worker: its process, its end of the socket and the calls it serves."""

    proc: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    calls: dict[int, _Call] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    output: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    killed_for: str | None = None  # why the host killed it (a timeout, stop): not a crash
    budget: int = 0  # characters of its output and log records still to be logged
    fault: str | None = None  # why the host killed a misbehaving worker (counts as a crash)
    cancelling: dict[int, asyncio.TimerHandle] = field(default_factory=dict)


class SandboxedPlugin:
    """One plugin's worker process, restarted as needed; ``call`` runs one hook in it."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        launcher: Launcher | None = None,
        store: KeyValueStore | None = None,
        crash_limit: int = 3,
        crash_window: float = 60.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        start_timeout: float = 10.0,
        output_limit: int = 64 * 1024,
        grace: float = 1.0,
        on_quarantine: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.launcher: Launcher = launcher or BubblewrapLauncher()
        self.store = store or MemoryStore()
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.backoff = backoff
        self.start_timeout = start_timeout
        self.output_limit = output_limit
        self.grace = grace
        self.on_quarantine = on_quarantine
        self.hooks: tuple[SandboxHook, ...] = ()
        self.callbacks: tuple[str, ...] = ()  # the plugin's lifecycle callbacks: plugin.on_load
        self.settings_schema: Any = None  # its settings model's JSON schema, as reported
        self._settings: Mapping[str, Any] | None = None  # what every new worker is sent first
        self.on_stop: list[Callable[[], None]] = []  # run once the plugin is stopped
        self._functions: dict[str, SandboxHook] = {}
        self.quarantined: str | None = None
        self.cold_start: float | None = None  # seconds the last start took
        self._crashes: deque[float] = deque()
        self._ids = itertools.count(1)
        self._process: _Process | None = None
        self._live: set[_Process] = set()  # every worker not yet reaped, the current included
        self._starting: asyncio.Task[_Process] | None = None
        self._stopped = True

    @property
    def state(self) -> State:
        if self.quarantined is not None:
            return "quarantined"
        if self._process is not None:
            return "running"
        return "stopped" if self._stopped else "starting"

    @property
    def crashes(self) -> int:
        """Crashes counted towards quarantine (within the last ``crash_window`` seconds)."""
        now = time.monotonic()
        return sum(1 for at in self._crashes if now - at <= self.crash_window)

    @property
    def pid(self) -> int | None:
        """The launcher's process id (also its process group), while a worker runs."""
        return self._process.proc.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the worker and wait until the plugin is imported; raises why it was not."""
        self._stopped = False
        await self._current()

    async def call(
        self,
        hook: str,
        subject: Any = None,
        named: Mapping[str, Any] | None = None,
        *,
        timeout: float,  # noqa: ASYNC109 - the hook's deadline, enforced by killing the worker
        store: KeyValueStore | None = None,
    ) -> Any:
        """Run ``hook(subject, **named)`` in the worker; its ``db`` requests go to ``store``.

        Raises what an in-process hook raises: the plugin's ``PluginError``, ``HookTimeout``
        (504) past ``timeout``, ``HookCrashed`` (502) for an exception or a dead worker,
        and ``PluginQuarantined`` (503) once the plugin is quarantined.
        """
        process = await self._current()
        if hook not in self._functions:
            raise LookupError(f"plugin {self.name} has no hook {hook!r}")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        process.calls[call_id] = _Call(future, store or self.store, hook)
        if self._process is not process:  # it ended between the two lines above
            process.calls.pop(call_id)
            raise WorkerCrashed(f"{hook}: {process.killed_for or 'worker ended'}", plugin=self.name)
        message = {"type": "call", "id": call_id, "hook": hook, "subject": subject,
                   "named": dict(named or {})}  # fmt: skip
        try:
            write_message(process.writer, message)
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.CancelledError:
            if self._process is process:  # the caller gave up (a deadline, a sibling failed)
                self._cancel(process, call_id, hook)
            raise
        except TimeoutError:
            why = f"{hook} ran past its {timeout:g} s timeout; its worker was killed"
            self._kill(process, why)
            raise HookTimeout(why, plugin=self.name) from None
        finally:
            ended = process.calls.pop(call_id, None)
            if ended is not None and ended.kv:
                # its store is the workflow's connection: no request of the hook may still
                # use it once the call is over (the workflow commits or rolls back next)
                await asyncio.wait(ended.kv, timeout=self.grace / 2)  # within dispatch's grace
        return future.result()

    def configure(self, values: Mapping[str, Any]) -> None:
        """The plugin's settings changed: the running worker gets them before any later
        call, and every worker started from now on gets them before its first."""
        self._settings = dict(values)
        process = self._process
        if process is not None and process.proc.returncode is None:
            write_message(process.writer, {"type": "settings", "values": self._settings})

    def _cancel(self, process: _Process, call_id: int, hook: str) -> None:
        """Cancel one call: an ``async def`` hook gets ``grace`` seconds to end; a ``def``
        hook cannot be cancelled in its thread, so its worker is killed (and restarted)."""
        if not self._functions[hook].is_async:
            self._kill(process, f"{hook} was cancelled; a def hook cannot be, so its worker "
                       "was killed")  # fmt: skip
            return
        write_message(process.writer, {"type": "cancel", "id": call_id})
        why = f"{hook} ignored its cancellation for {self.grace:g} s; its worker was killed"
        process.cancelling[call_id] = asyncio.get_running_loop().call_later(
            self.grace, self._kill, process, why
        )

    def reset(self) -> None:
        """Clear the quarantine (the plugin is enabled again); the next call starts a worker."""
        self.quarantined = None
        self._crashes.clear()
        self._stopped = False

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the worker (after ``grace`` seconds for calls in flight); no process remains."""
        self._stopped = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
            self._starting = None
        process = self._process
        if grace > 0 and process is not None and process.calls:
            pending = [c.future for c in process.calls.values()]
            await asyncio.wait(pending, timeout=grace)
        for live in list(self._live):  # the current worker and any killed one not yet reaped
            self._kill(live, "the plugin's worker was stopped")
            await self._reap(live)
        stopped, self.on_stop = self.on_stop, []
        for callback in stopped:
            callback()

    # -- worker lifecycle ------------------------------------------------------------

    async def _current(self) -> _Process:
        if self.quarantined is not None:
            raise PluginQuarantined(f"plugin quarantined: {self.quarantined}", plugin=self.name)
        if self._process is not None:
            return self._process
        if self._stopped:
            raise PluginError("the plugin's sandbox is stopped", status=503, plugin=self.name)
        return await asyncio.shield(self._restart())

    def _restart(self) -> asyncio.Task[_Process]:
        """The start under way, or a new one after the backoff the recent crashes call for."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._launch(self._delay()))
            self._starting.add_done_callback(self._started)
        return self._starting

    def _started(self, task: asyncio.Task[_Process]) -> None:
        if self._starting is task:
            self._starting = None
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("sandbox worker did not start",
                        extra={"plugin": self.name, "reason": str(error)})  # fmt: skip

    def _delay(self) -> float:
        recent = len(self._crashes)
        return 0.0 if recent == 0 else min(self.backoff[1], self.backoff[0] * 2 ** (recent - 1))

    async def _launch(self, delay: float) -> _Process:
        if delay:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        host_sock, worker_sock = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.launcher.command(self.spec, worker_sock.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(worker_sock.fileno(),),
                start_new_session=True,
                env=self.launcher.environment(),
            )
        except BaseException:
            host_sock.close()
            raise
        finally:
            worker_sock.close()
        process: _Process | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=host_sock)
            process = _Process(proc, reader, writer, budget=self.output_limit)
            self._live.add(process)
            for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
                assert stream is not None
                self._spawn(process, self._drain(process, stream, name))
            first = await asyncio.wait_for(read_message(reader), self.start_timeout)
        except BaseException as exc:
            await self._abandon(proc, process)
            if isinstance(exc, TimeoutError | ProtocolError):
                why = f"no handshake within {self.start_timeout:g} s" if isinstance(
                    exc, TimeoutError) else str(exc)  # fmt: skip
                raise PluginError(f"the plugin's worker did not start: {why}", status=503,
                                  plugin=self.name) from None  # fmt: skip
            raise
        if first is None or first["type"] != "ready":
            await self._abandon(proc, process)
            why = str(first.get("message")) if first else f"worker exited: {self._tail(process)}"
            raise PluginError(f"the plugin cannot run in its sandbox: {why}", status=503,
                              plugin=self.name) from None  # fmt: skip
        self.hooks = tuple(SandboxHook(**hook) for hook in first["hooks"])
        self._functions = {hook.function: hook for hook in self.hooks}
        self.callbacks = tuple(str(c["function"]) for c in first.get("callbacks") or ())
        for callback in first.get("callbacks") or ():  # "plugin.on_load" and the like
            name = str(callback["function"])
            self._functions[name] = SandboxHook(name, "", None, bool(callback["is_async"]))
        for hook in self.hooks:
            if (undo := hook.compensation()) is not None:
                self._functions.setdefault(undo.function, undo)
        self.settings_schema = first.get("settings")
        if self._settings is not None:  # ahead of every call on the socket
            write_message(process.writer, {"type": "settings", "values": self._settings})
        self.cold_start = time.perf_counter() - started
        self._process = process
        self._spawn(process, self._serve(process))
        self._spawn(process, self._watch(process))
        seconds = round(self.cold_start, 3)
        log.info("sandbox worker started",
                 extra={"plugin": self.name, "pid": proc.pid, "seconds": seconds})  # fmt: skip
        return process

    async def _abandon(self, proc: asyncio.subprocess.Process, process: _Process | None) -> None:
        """A worker that failed to start: kill it and wait until it is gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if process is None:
            await proc.wait()
            return
        process.killed_for = "start failed"
        await self._reap(process)

    def _spawn(self, process: _Process, coro: Any) -> None:
        task = asyncio.create_task(coro)
        process.tasks.add(task)
        task.add_done_callback(process.tasks.discard)

    async def _serve(self, process: _Process) -> None:
        """Read the worker's messages: results, errors and key-value requests."""
        try:
            while (message := await read_message(process.reader)) is not None:
                kind = message["type"]
                if kind == "kv":
                    self._request(process, message)
                    continue
                if kind == "log":
                    level = logging.getLevelName(str(message.get("level")))
                    text = f"plugin log {message.get('logger')}: {message.get('message')}"
                    self._log(process, level if isinstance(level, int) else logging.INFO, text)
                    continue
                if (pending := process.cancelling.pop(int(message.get("id", 0)), None)) is not None:
                    pending.cancel()  # a cancelled call ended in time
                call = process.calls.get(int(message.get("id", 0)))
                if call is None or call.future.done():
                    continue
                if kind == "result":
                    call.future.set_result(message.get("value"))
                elif kind == "error":
                    call.future.set_exception(self._error(message))
        except ProtocolError as exc:
            self._kill(process, f"protocol error: {exc}", crash=True)

    def _error(self, message: Mapping[str, Any]) -> PluginError:
        text = str(message.get("message") or "")
        if message.get("kind") == "plugin":
            status = message.get("status")
            valid = isinstance(status, int) and 400 <= status <= 599
            return PluginError(text, status=status if valid else None, plugin=self.name)
        return HookCrashed(text, plugin=self.name)

    def _request(self, process: _Process, message: Mapping[str, Any]) -> None:
        """Start one ``db`` request; its call waits for it before it ends."""
        task = asyncio.create_task(self._kv(process, message))
        process.tasks.add(task)
        task.add_done_callback(process.tasks.discard)
        call = process.calls.get(int(message.get("call") or 0))
        if call is not None:
            call.kv.add(task)
            task.add_done_callback(call.kv.discard)

    async def _kv(self, process: _Process, message: Mapping[str, Any]) -> None:
        """Run one ``db`` request of a call in flight in that call's store."""
        reply: dict[str, Any] = {"type": "kv_reply", "id": message.get("id")}
        try:
            reply["value"] = await self._kv_operation(process, message)
        except Exception as exc:  # noqa: BLE001 - the hook sees the failure, not the host
            reply["error"] = str(exc)
        if process.proc.returncode is None:
            write_message(process.writer, reply)

    @staticmethod
    async def _kv_operation(process: _Process, message: Mapping[str, Any]) -> Any:
        call = process.calls.get(int(message.get("call") or 0))
        key, op = message.get("key"), message.get("op")
        if call is None:
            raise LookupError("no call in flight")
        if not isinstance(key, str) or not key or len(key) > 200:
            raise ValueError("a key is a string of 1 to 200 characters")
        if op == "get":
            return await call.store.get(key)
        if op == "put":
            await call.store.put(key, message.get("value"))
        elif op == "delete":
            await call.store.delete(key)
        else:
            raise ValueError(f"unknown operation {op!r}")
        return None

    async def _drain(self, process: _Process, stream: asyncio.StreamReader, name: str) -> None:
        """Log the worker's output line by line (within its budget); drain the rest."""
        while chunk := await stream.read(65536):
            for line in chunk.decode(errors="replace").splitlines():
                process.output.append(line[:OUTPUT_LINE])
                self._log(process, logging.INFO, f"plugin {name}: {line}")

    def _log(self, process: _Process, level: int, text: str) -> None:
        """One line of the worker's, while ``output_limit`` characters are not used up."""
        if process.budget <= 0:
            return
        text = text[: OUTPUT_LINE + 40]
        process.budget -= len(text)
        if process.budget <= 0:
            text += " (further output not logged)"
        log.log(level, text, extra={"plugin": self.name})

    async def _watch(self, process: _Process) -> None:
        """When the worker ends: fail its calls, count a crash, restart or quarantine."""
        code = await process.proc.wait()
        await asyncio.sleep(0)  # let _serve deliver results that arrived before the end
        if self._process is process:
            self._process = None
        why = (
            process.killed_for
            or process.fault
            or f"worker exited ({_exit(code)}): {self._tail(process)}"
        )
        self._fail_calls(process, why)
        with contextlib.suppress(Exception):
            process.writer.close()
        self._live.discard(process)
        if process.killed_for is None and not self._stopped:
            log.warning("sandbox worker crashed", extra={"plugin": self.name, "reason": why})
            self._crash(why)
        if not self._stopped and self.quarantined is None:
            self._restart()  # eagerly, so the next call does not wait for a cold start

    def _crash(self, why: str) -> None:
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.crash_window:
            self._crashes.popleft()
        if len(self._crashes) >= self.crash_limit:
            count, window = len(self._crashes), self.crash_window
            self.quarantined = f"worker crashed {count} times in {window:g} s; last: {why}"
            log.error("plugin quarantined", extra={"plugin": self.name, "reason": why})
            if self.on_quarantine is not None:
                self.on_quarantine(self.quarantined)

    def _kill(self, process: _Process, why: str, *, crash: bool = False) -> None:
        """SIGKILL the worker's process group and the sandbox's pid 1 (so all inside it).

        ``crash``: the worker misbehaved (counts towards quarantine); else the host chose to.
        """
        if crash:
            process.fault = process.fault or why
        elif process.killed_for is None:
            process.killed_for = why
        if self._process is process:
            self._process = None
        for pending in process.cancelling.values():
            pending.cancel()
        process.cancelling.clear()
        inner = _children(process.proc.pid)  # the sandbox's pid 1: killing it ends them all
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.proc.pid, signal.SIGKILL)
        for pid in inner:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _fail_calls(self, process: _Process, why: str) -> None:
        for call in process.calls.values():
            if not call.future.done():
                call.future.set_exception(WorkerCrashed(f"{call.hook}: {why}", plugin=self.name))

    async def _reap(self, process: _Process) -> None:
        await process.proc.wait()
        self._fail_calls(process, process.killed_for or "worker ended")
        tasks = [task for task in process.tasks if task is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)  # output still in the pipes gets logged
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._live.discard(process)
        with contextlib.suppress(Exception):
            process.writer.close()

    @staticmethod
    def _tail(process: _Process) -> str:
        return " | ".join(list(process.output)[-3:]) or "no output"


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the launcher's), from /proc; none once it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    if code > 128:
        with contextlib.suppress(ValueError):
            return signal.Signals(code - 128).name
    return f"status {code}"
