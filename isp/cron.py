"""Cron expressions as the settings take them: 5 fields, or 6 with seconds first.

croniter (and procrastinate, which uses it) puts the optional seconds field *last*;
operators write it first (Quartz, Spring, systemd habits). :func:`engine_cron` turns
the operator's form into croniter's, in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter


def engine_cron(expression: str) -> str:
    """The croniter form of ``expression`` (a 6-field one gets its seconds moved last)."""
    fields = expression.split()
    if len(fields) == 6:
        fields = fields[1:] + fields[:1]
    return " ".join(fields)


def parse_cron(expression: str) -> croniter:
    """A croniter for ``expression``; ValueError saying what is wrong otherwise."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"a cron expression has 5 fields, or 6 with seconds first; {expression!r} has "
            f"{len(fields)}"
        )
    converted = engine_cron(expression)
    if not croniter.is_valid(converted):
        raise ValueError(f"{expression!r} is not a valid cron expression")
    return croniter(converted, datetime.now(UTC))


def next_run(expression: str, after: datetime) -> datetime:
    """The first time ``expression`` fires strictly after ``after`` (UTC)."""
    found = croniter(engine_cron(expression), after).get_next(datetime)
    assert isinstance(found, datetime)
    return found.astimezone(UTC)
