"""The hooks: text the customer once a service change committed, record the outcome.

The hooks are after-commit hooks (``@registry.after_commit``): they run through the
outbox once the workflow's transaction committed, never for a workflow that rolled back
(another plugin refused), and at least once: a delivery cut short by a crash runs again
after the restart, with the same ``delivery.id``.

One message row per delivery (``delivery_key`` = ``delivery.id``), written through
``db``, the plain connection. A text the gateway refused (error status, timeout,
refused connection, an answer without an id) is recorded ``failed`` and the hook raises
:class:`PluginError`, so the outbox retries it with backoff until it is sent or the
attempts run out (``GET /outbox?status=failed``). A row already ``sent`` (or
``skipped``) for the delivery makes a repeated attempt do nothing, so a customer is not
texted twice for one change; the gateway also gets the key as ``Idempotency-Key``. A
missing phone number or an unconfigured gateway is ``skipped``, not retried.

The core's models are reached duck-typed (``service.customer.phone`` ...), never
imported: the plugin depends on ``isp.plugins`` alone.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from isp.plugins import PluginError, registry

from . import gateway, plugin
from .models import Message, Status
from .texts import phone_number, render

log = logging.getLogger("isp_plugins.sms_gateway")

MAX_ERROR: Final = 500
FINISHED: Final = (Status.SENT.value, Status.SKIPPED.value)


@registry.after_commit("service_provision")
async def text_welcome(service: Any, delivery: Any, db: Any) -> str:
    """Welcome text with the PPPoE login; returns the recorded status."""
    return await notify("provision", service, delivery, db)


@registry.after_commit("service_suspend")
async def text_suspended(service: Any, delivery: Any, db: Any) -> str:
    return await notify("suspend", service, delivery, db)


@registry.after_commit("service_resume")
async def text_resumed(service: Any, delivery: Any, db: Any) -> str:
    return await notify("resume", service, delivery, db)


async def notify(event: str, service: Any, delivery: Any, db: Any) -> str:
    """Send one text about ``service`` and record it; a refused text raises (retry)."""
    previous = await Message.filter(delivery_key=delivery.id).using_db(db).first()
    if previous is not None and previous.status in FINISHED:
        return str(previous.status)  # an earlier attempt of this delivery got through
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
            gateway_id = await gateway.send(
                settings, to, text.sent, secrets=secrets, idempotency_key=delivery.id
            )
        except gateway.GatewayError as exc:
            status, error = Status.FAILED, exc.reason[:MAX_ERROR]
        else:
            status = Status.SENT
    values = {
        "service_id": service.id,
        "customer_id": service.customer_id,
        "event": event,
        "to": to,
        "text": text.recorded,
        "status": status.value,
        "gateway_id": gateway_id,
        "error": error,
    }
    if previous is None:
        await Message.create(delivery_key=delivery.id, using_db=db, **values)
    else:
        await Message.filter(id=previous.id).using_db(db).update(**values)
    # Neither the number nor the text is logged: they are personal data (and a login).
    level = logging.WARNING if status is Status.FAILED else logging.INFO
    log.log(
        level,
        "sms %s for service %s: %s%s (attempt %s)",
        event,
        service.id,
        status.value,
        f" ({error})" if error else "",
        delivery.attempt,
        extra={"plugin": "sms_gateway", "service_id": service.id, "status": status.value},
    )
    if status is Status.FAILED:
        raise PluginError(f"the gateway did not take the text: {error}")
    return status.value
