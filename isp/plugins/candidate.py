"""Validate an uploaded plugin in a throwaway child process, before the server runs any of it.

The staged folder is imported and checked by the real loader (manifest, import, ``plugin``,
hooks against the manifest and their events' signatures) in ``python -m
isp.plugins.candidate``, a process of its own in its own session. Nothing a candidate
does at import (patching the core, starting threads, spinning forever) reaches the
server: the child is killed, with everything it started, when it has answered or when
the import timeout (``ISP_PLUGIN_IMPORT_TIMEOUT``) has passed.

The child answers one JSON line on stdout; :func:`validate_candidate` turns it into
``None`` or a ``PluginInvalid`` here, at the one boundary between the two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

from isp.errors import PluginInvalid

_MAX_ANSWER: Final = 1 << 20


async def validate_candidate(
    folder: Path, known_events: set[str], *, limit: float, name: str
) -> None:
    """Import and check ``folder`` in a child process; raise ``PluginInvalid`` if it fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isp.plugins.candidate",
        str(folder),
        json.dumps(sorted(known_events)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killed with whatever it started
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await process.communicate()
    except TimeoutError:
        raise PluginInvalid(
            f"{name}: the plugin did not finish importing within {limit:g} s "
            "(ISP_PLUGIN_IMPORT_TIMEOUT); move slow work out of import time, into a hook "
            "or on_load",
            plugin=name,
        ) from None
    finally:
        _kill_group(process)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
    _raise_unless_valid(out[:_MAX_ANSWER], name)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _raise_unless_valid(out: bytes, name: str) -> None:
    answer: Any = None
    for line in reversed(out.splitlines()):  # the plugin may have printed before us
        with contextlib.suppress(ValueError):
            answer = json.loads(line)
            if isinstance(answer, dict) and "ok" in answer:
                break
    if not isinstance(answer, dict) or "ok" not in answer:
        raise PluginInvalid(
            f"{name}: the plugin's import ended the validating process without an answer "
            "(it called exit, or crashed the interpreter)",
            plugin=name,
        )
    if not answer["ok"]:
        extra = {k: v for k, v in answer.get("extra", {}).items() if isinstance(k, str)}
        extra.setdefault("plugin", name)
        raise PluginInvalid(str(answer.get("detail") or "invalid plugin"), **extra)


def _main(argv: list[str]) -> int:
    """Child side: load the folder with the real loader and print the verdict."""
    from isp.plugins.discovery import describe
    from isp.plugins.loader import load

    folder, events = Path(argv[0]), json.loads(argv[1])
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the plugin's prints must not mix in
    verdict: dict[str, Any]
    try:
        load(describe(folder), set(events))
    except PluginInvalid as exc:
        verdict = {"ok": False, "detail": exc.detail, "extra": _plain(exc.extra)}
    except BaseException as exc:  # noqa: BLE001 - anything else is a refusal too
        verdict = {"ok": False, "detail": f"{folder.name}: {type(exc).__name__}: {exc}"}
    else:
        verdict = {"ok": True}
    real_stdout.write(json.dumps(verdict) + "\n")
    real_stdout.flush()
    os._exit(0)  # no atexit handlers or threads of the plugin run after the verdict


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(extra, default=str))  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
