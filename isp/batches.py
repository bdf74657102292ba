"""Queries over many ids, split so no statement comes near the databases' argument limits.

SQLite refuses a statement with more than 32,766 bound values and PostgreSQL (asyncpg)
more than 32,767; a list of ids from a client or a fleet would otherwise become one such
statement and fail as a 500.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

MAX_ARGUMENTS: Final = 5_000
"""Ids bound in one statement: far under both limits, leaving room for other arguments."""


def batches(items: Sequence[T], size: int = MAX_ARGUMENTS) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
