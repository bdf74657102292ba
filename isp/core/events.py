"""The catalogue of events the core emits, and what each hook receives.

Every hook is called as ``hook(obj, db=conn, **extra)``: ``obj`` is the domain object,
``conn`` the workflow's transaction connection, ``extra`` the event's keyword arguments
(``changes``: field -> previous value, ``password`` -> None). What a hook writes through
``db`` commits or rolls back with the workflow; a hook that raises aborts it.

=====================  =======================================================================
event                  obj
=====================  =======================================================================
customer_created       Customer, just inserted
customer_updated       Customer, changed; ``changes``
plan_updated           Plan, new rates saved; ``changes``, ``devices`` (the routers with
                       services on the plan that are not terminated)
service_update         Service, new plan or password saved, relations loaded (the new
                       plan); ``changes``
service_provision      Service (status already ``active`` in the transaction), with
                       ``customer``, ``plan`` and ``device`` loaded
service_suspend        Service (status ``suspended``), relations loaded
service_resume         Service (status ``active``), relations loaded
service_terminate      Service (status ``terminated``), relations loaded
device_backup          Device; a hook returns a list of backup artifacts
                       (``{"kind": "export"|"binary", "data": bytes, "sha256": str}``,
                       ``sha256`` over the content with volatile lines removed)
=====================  =======================================================================

``Service.reveal_password()`` and ``Device.reveal_password()`` give the secrets in clear.
"""

from __future__ import annotations

from typing import Final

CUSTOMER_CREATED: Final = "customer_created"
CUSTOMER_UPDATED: Final = "customer_updated"
PLAN_UPDATED: Final = "plan_updated"
SERVICE_UPDATE: Final = "service_update"
SERVICE_PROVISION: Final = "service_provision"
SERVICE_SUSPEND: Final = "service_suspend"
SERVICE_RESUME: Final = "service_resume"
SERVICE_TERMINATE: Final = "service_terminate"
DEVICE_BACKUP: Final = "device_backup"

CORE_EVENTS: Final = frozenset(
    {
        CUSTOMER_CREATED,
        CUSTOMER_UPDATED,
        PLAN_UPDATED,
        SERVICE_UPDATE,
        SERVICE_PROVISION,
        SERVICE_SUSPEND,
        SERVICE_RESUME,
        SERVICE_TERMINATE,
        DEVICE_BACKUP,
    }
)
