"""The text export: ``/export`` proven complete, checked, and digested without noise.

What goes wrong with exports on real routers (ROUTEROS.md), and what is done about it:

- a menu that times out is written as ``#error exporting "/ip/firewall/calea" (timeout)``
  (7.11+) or ``#error exporting /ip firewall calea`` (v6) and the export goes on; a cut
  export may end with ``#interrupted``: such an export is refused, naming the menus;
- an export can be cut at a line boundary and the channel closed with exit status 0
  (Oxidized #1966, #3867), so a final newline proves nothing: the router is asked to
  print a marker after the export on the same channel (``/export; :put "<nonce>"``), the
  marker must be the last line, and it is stripped before anything is stored or digested;
- v7 leaves secrets out unless ``show-sensitive`` (and the user's ``sensitive`` policy):
  the flag is on by default; v6 rejects it with ``expected end of command (line 1 column
  9)``, which is never stored: plain ``/export`` runs instead (v6 shows secrets anyway);
- volatile comment lines (the time stamp header, ``# poe-out status: ...``, ``# ... please
  restart the device in order to apply the new setting``) change without a configuration
  change: the digest leaves them out, the stored text keeps them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any, Final

from .errors import BackupInvalid
from .routeros import Command, Put, Script, lines, router_error
from .settings import MikrotikSettings
from .ssh import RouterSession

log = logging.getLogger(__name__)

HEADER: Final = re.compile(
    r"^# (?:\d{4}-\d{2}-\d{2}|[a-z]{3}/\d{2}/\d{4}) \d{2}:\d{2}:\d{2} by RouterOS \S+"
)
# Comments RouterOS adds to an export that change without any configuration change
# (the list Oxidized's RouterOS model strips, which comes from years of real routers).
VOLATILE: Final = re.compile(
    r"^\s*# (?:poe-out status: .*|inactive time|received packet from \S+ bad format"
    r"|Firmware upgraded successfully.*|\S+ not ready|Interface not running"
    r"|.+ please restart the device in order to apply the new setting)\s*$"
)
# `#error exporting "/ip/firewall/calea" (timeout)` (7.11+), `#error exporting /ip socks` (v6)
ERROR_EXPORTING: Final = re.compile(
    r'^#error exporting (?:"(?P<quoted>[^"]*)"|(?P<plain>.*?))(?: \([^()]*\))?\s*$', re.MULTILINE
)
INTERRUPTED: Final = re.compile(r"^#interrupted\s*$", re.MULTILINE)
UNKNOWN_FLAG: Final = "expected end of command"  # v6 does not know show-sensitive
MARKER_PREFIX: Final = "isp-export-end-"

Artifact = dict[str, Any]


def stable_text(text: str) -> str:
    """The export without its volatile lines, line ends normalised to ``\\n``."""
    kept = text.replace("\r\n", "\n").split("\n")
    if kept and HEADER.match(kept[0]):
        kept = kept[1:]
    return "\n".join(line for line in kept if not VOLATILE.match(line))


def export_digest(text: str) -> str:
    return hashlib.sha256(stable_text(text).encode("utf-8", errors="surrogateescape")).hexdigest()


def export_script(marker: str, *, show_sensitive: bool) -> Script:
    """``/export [show-sensitive]; :put "<marker>"``: one channel, the marker last."""
    flags = ("show-sensitive",) if show_sensitive else ()
    return Script((Command("/", "export", flags=flags), Put(marker)))


async def take(router: RouterSession, settings: MikrotikSettings) -> Artifact:
    """The export as a checked artifact (``show-sensitive`` when configured and known)."""
    marker = MARKER_PREFIX + secrets.token_hex(8)
    sensitive = settings.export_show_sensitive
    script = export_script(marker, show_sensitive=sensitive)
    raw = await router.output(script, limit=settings.export_timeout)
    if sensitive and rejects_flag(raw):
        log.info("show-sensitive rejected (RouterOS 6): plain /export", extra=router.target.where)
        sensitive = False
        script = export_script(marker, show_sensitive=False)
        raw = await router.output(script, limit=settings.export_timeout)
    data = check_export(raw, router, script, marker)
    text = data.decode("utf-8", errors="replace")
    if sensitive:
        warn_if_secrets_hidden(text, router)
    artifact: Artifact = {"kind": "export", "data": data, "sha256": export_digest(text)}
    if settings.export_retention is not None:
        # the core keeps every changed export and this many unchanged ones
        artifact["keep_unchanged"] = settings.export_retention
    return artifact


def rejects_flag(raw: bytes) -> bool:
    """The v6 answer to ``show-sensitive``: one line, ``expected end of command ...``."""
    said = lines(raw.decode("utf-8", errors="replace"))
    return len(said) == 1 and said[0].startswith(UNKNOWN_FLAG)


def check_export(raw: bytes, router: RouterSession, script: Script, marker: str) -> bytes:
    """The export as sent, without the marker; or an error saying why it is not a good one."""
    text = raw.decode("utf-8", errors="replace")
    message = router_error(text)
    if message is not None:
        raise router.command_error(script, message)
    host, where = router.target.host, {**router.target.where, "command": script.label}
    menus = [m.group("quoted") or m.group("plain") for m in ERROR_EXPORTING.finditer(text)]
    interrupted = INTERRUPTED.search(text) is not None
    if menus or interrupted:
        what = f"could not export {', '.join(menus)}" if menus else "stopped"
        stop = " and was interrupted (#interrupted)" if interrupted and menus else ""
        raise BackupInvalid(
            f"router {host}: the export is incomplete: RouterOS {what}{stop}; nothing was "
            "stored and the last good backup is kept. Retry when the router is less busy, "
            "or check those menus on the router",
            menus=menus,
            interrupted=interrupted,
            **where,
        )
    body = strip_marker(raw, marker)
    if body is None:
        raise BackupInvalid(
            f"router {host}: the export was cut short after {len(raw)} bytes (the end "
            "marker printed after it on the same channel is missing, although the channel "
            "closed normally); nothing was stored and the last good backup is kept",
            truncated=True,
            **where,
        )
    first = body.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    if not HEADER.match(first):
        shown = first[:120] or "(no output)"
        raise BackupInvalid(
            f"router {host}: '/export' did not print an export (first line {shown!r}); "
            "nothing was stored",
            **where,
        )
    return body


def strip_marker(raw: bytes, marker: str) -> bytes | None:
    """``raw`` up to the marker line, which must be the last line; None when it is not."""
    token = marker.encode()
    at = raw.rfind(token)
    if at < 0 or raw[at + len(token) :].strip() or (at > 0 and raw[at - 1 : at] != b"\n"):
        return None
    return raw[:at]


def warn_if_secrets_hidden(text: str, router: RouterSession) -> None:
    """v7 drops secrets silently when the user lacks the ``sensitive`` policy: say so."""
    hidden = 0
    menu = ""
    for line in text.replace("\\\r\n    ", "").replace("\\\n    ", "").splitlines():
        if line.startswith("/"):
            menu = line.strip()
        elif menu == "/ppp secret" and line.startswith("add ") and " password=" not in line:
            hidden += 1
    if hidden:
        log.warning(
            "%d PPP secrets were exported without their password: give the router user "
            "the sensitive policy so the export is a portable copy",
            hidden,
            extra={**router.target.where, "secrets_without_password": hidden},
        )
