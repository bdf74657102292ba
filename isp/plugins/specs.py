"""The core events as hook specifications, and the check of a hook against its event.

Every hook is called ``hook(obj, db=conn, **extra)``: the domain object positionally
(any parameter name, so existing plugins keep working), the rest by name. A hook may
take fewer of the named arguments than the event offers (pluggy's rule): dispatch passes
only those it accepts. A hook that asks for an argument its event never passes is
refused when its plugin loads (:func:`verify`), naming plugin, function, event and
argument, instead of failing with a 502 on its first call.

:data:`CORE_SPECS` is the one table of core events; the README's event table follows it.
Events a plugin declares in its manifest (``"events"``) have no specification: their
hooks are not checked, and receive the named arguments they accept.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from isp.plugins.manifest import check_event

AFTER_COMMIT_KEYWORDS: Final = ("delivery",)
"""What an after-commit hook receives besides its event's arguments."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event: the object passed first, the arguments passed by name, what it means."""

    name: str
    subject: str  # how the first, positional argument is named in docs (``customer``)
    keywords: tuple[str, ...]  # passed by name, in documentation order (``db`` last)
    doc: str
    after_commit: bool = True  # its workflow delivers ``@registry.after_commit`` hooks

    def __post_init__(self) -> None:
        check_event(self.name)

    @property
    def signature(self) -> str:
        """``(plan, changes, devices, db)``, as the README shows it."""
        return f"({', '.join((self.subject, *self.keywords))})"

    @property
    def after_commit_signature(self) -> str | None:
        """``(service, delivery, db)``: an after-commit hook's call, None without one."""
        if not self.after_commit:
            return None
        return f"({', '.join((self.subject, *AFTER_COMMIT_KEYWORDS, *self.keywords))})"


CORE_SPECS: Final[tuple[EventSpec, ...]] = (
    EventSpec(
        "customer_created",
        "customer",
        ("db",),
        "the `Customer` just inserted (`name`, `email`, `phone`, `address`)",
    ),
    EventSpec(
        "customer_updated",
        "customer",
        ("changes", "db"),
        "the `Customer` with its new values saved; `changes` maps each changed field to "
        "its previous value",
    ),
    EventSpec(
        "plan_updated",
        "plan",
        ("changes", "devices", "db"),
        "the `Plan` with its new rates saved; `changes` as above; `devices`: the routers "
        "with services on this plan that are not terminated",
    ),
    EventSpec(
        "service_provision",
        "service",
        ("db",),
        "the `Service`, status already `active`, with `service.customer`, `service.plan`, "
        "`service.device` loaded",
    ),
    EventSpec(
        "service_update",
        "service",
        ("changes", "db"),
        "the `Service` with its new plan or password saved, relations loaded (the new "
        "plan); `changes` as above, `password` -> `None` (secrets never travel)",
    ),
    EventSpec(
        "service_suspend", "service", ("db",), "the `Service`, status `suspended`, relations loaded"
    ),
    EventSpec(
        "service_resume", "service", ("db",), "the `Service`, status `active`, relations loaded"
    ),
    EventSpec(
        "service_terminate",
        "service",
        ("db",),
        "the `Service`, status `terminated`, relations loaded",
    ),
    EventSpec(
        "device_backup",
        "device",
        ("db",),
        "the `Device`; return a list of backup artifacts (see below); `db` is the plain "
        "connection: backups take seconds and hold no transaction",
        after_commit=False,
    ),
)

SPECS_BY_NAME: Final[Mapping[str, EventSpec]] = MappingProxyType({s.name: s for s in CORE_SPECS})


class SignatureMismatch(ValueError):
    """A hook's parameters do not fit its event; the message says which and how to fix it."""


def accepted_keywords(func: Callable[..., Any]) -> frozenset[str] | None:
    """The named arguments ``func`` accepts after the object; None: any (``**kwargs``)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(
        p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def verify(
    func: Callable[..., Any], function: str, spec: EventSpec, *, after_commit: bool = False
) -> None:
    """Refuse a hook that cannot be called as ``func(obj, <spec.keywords by name>)``
    (plus ``delivery`` for an after-commit hook)."""
    if after_commit and not spec.after_commit:
        raise SignatureMismatch(
            f"{function} is an after-commit hook, but {spec.name} has no after-commit "
            f"delivery (it runs in no transaction): use @registry.hook({spec.name!r})"
        )
    keywords = (*spec.keywords, *AFTER_COMMIT_KEYWORDS) if after_commit else spec.keywords
    offered = f"it passes {spec.subject} (first, by position) and {', '.join(keywords)} by name"
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise SignatureMismatch(
            f"{function} takes no argument for {spec.subject!r}; {spec.name} {offered}: "
            f"declare it as def {func.__name__}{spec.signature}"
        )
    rest = params[1:] if positional and params[0] is positional[0] else params
    for param in rest:
        if param.default is not param.empty or param.kind in (
            param.VAR_POSITIONAL,
            param.VAR_KEYWORD,
        ):
            continue
        if param.kind is param.POSITIONAL_ONLY or param.name not in keywords:
            raise SignatureMismatch(
                f"{function} takes argument {param.name!r}, which {spec.name} does not pass; "
                f"{offered}"
            )
