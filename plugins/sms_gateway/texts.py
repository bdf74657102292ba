"""From a service and the settings to the text sent and the text recorded.

The two differ only in the PPPoE password: it is sent when ``include_password`` is true
and is masked in the recorded copy always, so the message log never holds a secret.
Phone numbers are normalised here so the gateway gets one format (``+4420...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from .settings import PASSWORD, SmsSettings, placeholders

MASK: Final = "********"
PROVISION: Final = "provision"
_PUNCTUATION = re.compile(r"[\s\-().]")
_PHONE = re.compile(r"^\+?\d{6,15}$")


@dataclass(frozen=True, slots=True)
class Text:
    """What goes to the gateway (``sent``) and what the log keeps (``recorded``)."""

    sent: str
    recorded: str


def phone_number(raw: str | None) -> str | None:
    """``raw`` without spaces, dashes, dots and brackets; None when it is not a number."""
    if raw is None:
        return None
    number = _PUNCTUATION.sub("", raw)
    return number if _PHONE.match(number) else None


def render(event: str, service: Any, settings: SmsSettings) -> Text:
    """The text for ``event`` about ``service`` (its customer and plan loaded).

    With ``include_password`` the welcome text gets the password: through ``{password}``
    when the template has it, else appended, so turning the setting on is enough.
    """
    template = settings.template(event)
    if settings.include_password and event == PROVISION and PASSWORD not in placeholders(template):
        template += " Password: {password}"
    values = {
        "name": _name(service),
        "username": service.username,
        "plan": getattr(service.plan, "name", ""),
        "sender": settings.sender,
    }
    recorded = template.format_map({**values, PASSWORD: MASK})
    if not (settings.include_password and PASSWORD in placeholders(template)):
        return Text(sent=recorded, recorded=recorded)
    # Revealed only when it is going out, and only into the text sent.
    return Text(
        sent=template.format_map({**values, PASSWORD: service.reveal_password()}), recorded=recorded
    )


def _name(service: Any) -> str:
    name = getattr(service.customer, "name", None)
    return str(name) if name else "customer"
