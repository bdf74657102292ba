"""``SmsSettings``: where the gateway is, who the texts come from, what they say.

Hooks read the values in force on every call (``plugin.settings``: defaults <
``PUT /plugins/sms_gateway/settings`` < ``ISP_PLUGIN_SMS_GATEWAY__<FIELD>``), so a change
reaches the next message without a reload. Templates are checked when the settings are
saved, not when a message is due: an unknown placeholder is a 422, never a failed SMS.
"""

from __future__ import annotations

import string
from typing import Annotated, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationInfo,
    field_validator,
)

PLACEHOLDERS: Final = frozenset({"name", "username", "plan", "sender", "password"})
PASSWORD: Final = "password"
MAX_TIMEOUT: Final = 15.0  # manifest.json gives each hook 20 s: room for the DB write

Template = Annotated[str, Field(min_length=1, max_length=480)]

DEFAULT_PROVISION: Final = (
    "Welcome to {sender}, {name}! Your {plan} internet service is active. PPPoE login: {username}"
)
DEFAULT_SUSPEND: Final = (
    "{sender}: {name}, your internet service ({username}) is suspended. "
    "Please contact us to restore it."
)
DEFAULT_RESUME: Final = "{sender}: {name}, your internet service ({username}) is active again."


def placeholders(template: str) -> set[str]:
    """The ``{field}`` names a template uses; ValueError when it is not a valid format."""
    names = set()
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        # Plain names only: "{name.__class__}" or "{name!r:>9}" would let a template
        # reach into Python objects or make texts depend on formatting details.
        if field not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            raise ValueError(f"unknown placeholder {{{field}}}; known placeholders: {known}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} takes no format spec or conversion")
        names.add(field)
    return names


class SmsSettings(BaseModel):
    """The gateway, the sender, the timeout and one template per event.

    ``gateway_url`` unset means "not configured": messages are recorded as ``skipped``
    and nothing is sent. The PPPoE password is never put in a text unless
    ``include_password`` is true; the message log never holds it either way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_url: HttpUrl | None = None
    api_token: SecretStr | None = None
    sender: Annotated[str, Field(min_length=1, max_length=16)] = "ISP"
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] = 5.0
    include_password: bool = False
    provision_template: Template = DEFAULT_PROVISION
    suspend_template: Template = DEFAULT_SUSPEND
    resume_template: Template = DEFAULT_RESUME

    @field_validator("provision_template", "suspend_template", "resume_template")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        # include_password is declared before the templates, so it is validated already.
        if PASSWORD in placeholders(value) and not info.data.get("include_password", False):
            raise ValueError(
                "uses {password} but include_password is false; set include_password to "
                "true to send PPPoE passwords by SMS"
            )
        return value

    def template(self, event: str) -> str:
        """The template of ``event`` (``provision``, ``suspend`` or ``resume``)."""
        found: str = getattr(self, f"{event}_template")
        return found
