"""The hooks: text the customer about a service change, record the outcome, never fail.

The hooks are declared ``"critical": false`` and also catch every gateway failure
themselves: a texting problem is recorded as a ``failed`` message and the service
change goes ahead. A missing phone number or an unconfigured gateway is ``skipped``.

The message row is written through ``db``, the workflow's transaction: if another
plugin's critical hook aborts the workflow, the row rolls back although the text may
already be out (see README.md, "Failure behaviour").

The core's models are reached duck-typed (``service.customer.phone`` ...), never
imported: the plugin depends on ``isp.plugins`` alone.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from isp.plugins import registry

from . import gateway, plugin
from .models import Message, Status
from .texts import phone_number, render

log = logging.getLogger("isp_plugins.sms_gateway")

MAX_ERROR: Final = 500


@registry.hook("service_provision")
async def text_welcome(service: Any, db: Any) -> str:
    """Welcome text with the PPPoE login; returns the recorded status."""
    return await notify("provision", service, db)


@registry.hook("service_suspend")
async def text_suspended(service: Any, db: Any) -> str:
    return await notify("suspend", service, db)


@registry.hook("service_resume")
async def text_resumed(service: Any, db: Any) -> str:
    return await notify("resume", service, db)


async def notify(event: str, service: Any, db: Any) -> str:
    """Send one text about ``service`` and record it; gateway failures are recorded."""
    settings = plugin.settings  # Plugin[SmsSettings]: the values in force, typed
    text = render(event, service, settings)
    to = phone_number(getattr(service.customer, "phone", None))
    gateway_id: str | None = None
    error: str | None = None
    if settings.gateway_url is None:
        status, error = Status.SKIPPED, "gateway_url is not configured"
    elif to is None:
        status, error = Status.SKIPPED, "the customer has no usable phone number"
    else:
        secrets = (service.reveal_password(),) if text.sent != text.recorded else ()
        try:
            gateway_id = await gateway.send(settings, to, text.sent, secrets=secrets)
        except gateway.GatewayError as exc:
            status, error = Status.FAILED, exc.reason[:MAX_ERROR]
        else:
            status = Status.SENT
    await Message.create(
        service_id=service.id,
        customer_id=service.customer_id,
        event=event,
        to=to,
        text=text.recorded,
        status=status.value,
        gateway_id=gateway_id,
        error=error,
        using_db=db,
    )
    # Neither the number nor the text is logged: they are personal data (and a login).
    level = logging.WARNING if status is Status.FAILED else logging.INFO
    log.log(
        level,
        "sms %s for service %s: %s%s",
        event,
        service.id,
        status.value,
        f" ({error})" if error else "",
        extra={"plugin": "sms_gateway", "service_id": service.id, "status": status.value},
    )
    return status.value
