"""Undoing a subscriber change on the router when its workflow aborts.

Before a hook changes a subscriber's secret it reads the secret as it is
(:func:`capture`: profile, password, disabled flag, comment, or "no such secret"); the
hook keeps that in the :class:`Journal` under the event's object, and the hook's
compensation puts it back (:func:`restore`): a secret that did not exist is removed, one
that did gets its previous values again. A subscriber left without an enabled secret
is also removed from ``/ppp active``, as suspend does. A live session ended by the hook
cannot be brought back: the subscriber logs in again.

:func:`restore` is idempotent (one conditional statement, or a ``remove`` of what may
already be gone), so running a compensation again is safe.

What was captured lives in this process, attached to the very object the hook and its
compensation receive; a compensation whose hook never got to read the router leaves the
router alone. A compensation that failed keeps what it had for its retry through the
outbox, in this process only: a retry on another instance, or after a restart, cannot
know the secret's previous values and fails, naming the subscriber to check by hand.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

from .provision import kick
from .routeros import Command, Find, Upsert, lines, unquote
from .ssh import RouterSession

_FIELD: Final = re.compile(r'(?:^|\s)([a-z][a-z0-9-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_FLAGS: Final = re.compile(r"^\s*\d+\s+([A-Z*]*)\s")


@dataclass(frozen=True, slots=True)
class SecretState:
    """A PPP secret's values a hook may change (``password`` is never shown)."""

    profile: str
    password: str = field(repr=False)
    disabled: bool
    comment: str = ""
    service: str = "pppoe"


def parse_terse(output: str) -> SecretState | None:
    """The first item of ``/ppp secret print terse`` output (`` 0 X name=... ``), or None.

    Values are bare or ``"..."``-quoted; empty ones are left out; ``X`` flags a disabled
    secret (ROUTEROS.md, PPP).
    """
    for line in lines(output):
        flags = _FLAGS.match(line)
        if flags is None:
            continue
        values = {name: unquote(value) for name, value in _FIELD.findall(line)}
        return SecretState(
            profile=values.get("profile", "default"),
            password=values.get("password", ""),
            disabled="X" in flags.group(1),
            comment=values.get("comment", ""),
            service=values.get("service", "pppoe"),
        )
    return None


async def capture(router: RouterSession, username: str) -> SecretState | None:
    """The subscriber's secret as it is now, or None when there is none."""
    command = Command("/ppp secret", "print", flags=("terse",), where={"name": username})
    return parse_terse(await router.run(command, quiet=False))


async def restore(router: RouterSession, username: str, before: SecretState | None) -> None:
    """Put the secret back as :func:`capture` found it (None: remove it)."""
    if before is None:
        await router.run(Command("/ppp secret", "remove", target=Find({"name": username})))
    else:
        values = {
            "password": before.password,
            "service": before.service,
            "profile": before.profile,
            "comment": before.comment,
            "disabled": "yes" if before.disabled else "no",
        }
        await router.run(Upsert("/ppp secret", username, values))
    if before is None or before.disabled:
        await kick(router, username)  # disabling, or removing, does not end a session


@dataclass(frozen=True, slots=True)
class Captured:
    """What one hook found on one router before it acted."""

    device_id: int
    username: str
    before: SecretState | None


class Journal:
    """What hooks captured, by the identity of the object their event passed.

    Keyed by identity (not equality: two workflows of one service must not share an
    entry); an entry goes when its compensation takes it or its object is collected.
    A hook marks its object before it touches the router (``None``: nothing read yet).
    A compensation that failed keeps what it had by service id (:meth:`keep_for_retry`),
    for the retry the outbox runs with the object reloaded.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], Captured | None] = {}
        self._retries: dict[tuple[int, str], Captured] = {}

    def keep(self, obj: Any, event: str, captured: Captured | None) -> None:
        key = (id(obj), event)
        if key not in self._entries:
            weakref.finalize(obj, self._entries.pop, key, None)
        self._entries[key] = captured

    def take(self, obj: Any, event: str) -> tuple[bool, Captured | None]:
        """(whether a hook marked this very object, what it captured)."""
        key = (id(obj), event)
        if key in self._entries:
            return True, self._entries.pop(key)
        return False, self._retries.get((obj.id, event))

    def keep_for_retry(self, service_id: int, event: str, captured: Captured) -> None:
        self._retries[(service_id, event)] = captured

    def done(self, service_id: int, event: str) -> None:
        self._retries.pop((service_id, event), None)


journal: Final = Journal()
