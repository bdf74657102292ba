"""The service status machine: pending -> active <-> suspended -> terminated.

Each workflow names the move it makes; a move from a status not listed is refused with
409 before anything changes.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from isp.core.models import ServiceStatus
from isp.errors import IllegalTransition

S = ServiceStatus


class Move(NamedTuple):
    action: str
    event: str
    sources: frozenset[ServiceStatus]
    target: ServiceStatus


MOVES: Final[dict[str, Move]] = {
    "provision": Move("provision", "service_provision", frozenset({S.PENDING}), S.ACTIVE),
    "suspend": Move("suspend", "service_suspend", frozenset({S.ACTIVE}), S.SUSPENDED),
    "resume": Move("resume", "service_resume", frozenset({S.SUSPENDED}), S.ACTIVE),
    "terminate": Move(
        "terminate",
        "service_terminate",
        frozenset({S.PENDING, S.ACTIVE, S.SUSPENDED}),
        S.TERMINATED,
    ),
}


def check_move(action: str, current: ServiceStatus, service_id: int) -> Move:
    """The move for ``action`` from ``current``, or IllegalTransition (409)."""
    move = MOVES[action]
    if current not in move.sources:
        allowed = ", ".join(sorted(s.value for s in move.sources))
        raise IllegalTransition(
            f"cannot {action} service {service_id}: it is {current.value}; "
            f"{action} needs one of: {allowed}",
            service_id=service_id,
            service_status=current.value,
            action=action,
        )
    return move
