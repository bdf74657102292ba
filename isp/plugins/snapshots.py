"""What a sandboxed hook receives of the event's objects: plain data, never the objects.

:func:`snapshot` turns a core model (``Customer``, ``Service``, ``Plan``, ``Device``) into
the documented attributes its event table lists: every column except the encrypted
ones (``*_enc``) and the related objects the core loaded (``service.customer``,
``.plan``, ``.device``). The worker makes these read-only snapshots. A secret
(``reveal_password()``) travels only when the plugin was granted ``secrets``: then it
is the ``_password`` field the worker's snapshot answers ``reveal_password()`` with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from tortoise.models import Model

SECRET_FIELD: Final = "_password"


def snapshot(value: Any, *, secrets: bool = False, depth: int = 0) -> Any:
    """``value`` as data the sandbox protocol carries (see the module docstring)."""
    if isinstance(value, Model):
        return _model(value, secrets=secrets, depth=depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return snapshot(dataclasses.asdict(value), secrets=secrets, depth=depth)
    if isinstance(value, Mapping):
        return {str(k): snapshot(v, secrets=secrets, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [snapshot(item, secrets=secrets, depth=depth + 1) for item in value]
    return value


def _model(obj: Model, *, secrets: bool, depth: int) -> dict[str, Any]:
    meta = obj._meta
    fields: dict[str, Any] = {}
    for name in meta.db_fields:
        attribute = meta.fields_db_projection_reverse.get(name, name)
        if attribute.endswith("_enc"):
            continue
        fields[attribute] = getattr(obj, attribute, None)
    if depth < 2:
        for name in meta.fk_fields:
            related = obj.__dict__.get(f"_{name}")
            if isinstance(related, Model):
                fields[name] = _model(related, secrets=secrets, depth=depth + 1)
    reveal = getattr(obj, "reveal_password", None)
    if secrets and callable(reveal):
        fields[SECRET_FIELD] = reveal()
    return fields
