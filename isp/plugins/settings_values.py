"""Plugin setting values: from the environment, toward storage, and into error messages.

Helpers of :mod:`isp.plugins.settings` that need no state: which variable overrides a
field, how its text is read, which fields are secret, how values are stored, and how a
validation error is reported without ever echoing a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import is_dataclass
from typing import Annotated, Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from isp.errors import ValidationFailed

ENV_PREFIX: Final = "ISP_PLUGIN_"


def env_variable(plugin: str, field_name: str) -> str:
    """``ISP_PLUGIN_<NAME>__<FIELD>``, both upper-case."""
    return f"{ENV_PREFIX}{plugin.upper()}__{field_name.upper()}"


def env_values(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """Environment overrides as validation input: strings (lax mode), JSON for collections."""
    values: dict[str, Any] = {}
    for f, info in model.model_fields.items():
        text = os.environ.get(env_variable(name, f))
        if text is None:
            continue
        values[f] = text
        if wants_json(info.annotation):
            # Not JSON: validation then refuses the string, naming the variable.
            with contextlib.suppress(ValueError):
                values[f] = json.loads(text)
    return values


def invalid_settings(
    name: str, exc: ValidationError, secrets: Mapping[str, Any]
) -> ValidationFailed:
    """422 from pydantic errors without ``input`` (it may hold a secret) or secret text."""
    return _settings_problem(
        name, exc.errors(include_url=False, include_input=False, include_context=False), secrets
    )


def wrong_types(
    name: str, model: type[BaseModel], changes: Mapping[str, Any], secrets: Mapping[str, Any]
) -> ValidationFailed | None:
    """422 when a changed value has the wrong JSON type (``true`` or ``"5"`` for an
    integer, ``2.0`` for an integer), as strict JSON validation sees it; else None.

    Only the fields sent are judged: the others may be missing from a partial body.
    Environment overrides stay lax, since environment values are always text.
    """
    try:
        model.model_validate_json(json.dumps(dict(changes)), strict=True)
    except ValidationError as exc:
        errors = [
            error
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
            if error["loc"] and str(error["loc"][0]) in changes and error["type"] != "missing"
        ]
        return _settings_problem(name, errors, secrets) if errors else None
    return None


def _settings_problem(
    name: str, raw: Iterable[Any], secrets: Mapping[str, Any]
) -> ValidationFailed:
    hidden = [str(v) for v in secrets.values() if v not in (None, "")]
    errors = []
    for error in raw:
        msg = error["msg"]
        if error["loc"] and str(error["loc"][0]) in secrets and any(h in msg for h in hidden):
            msg = "invalid value (not shown: the setting is secret)"
        errors.append({"loc": ["body", *error["loc"]], "msg": msg})
    detail = "; ".join(".".join(map(str, e["loc"][1:])) + f": {e['msg']}" for e in errors)
    return ValidationFailed(
        f"invalid settings for plugin {name!r}: {detail}", errors=errors, plugin=name
    )


def stored_form(value: Any) -> Any:
    """JSON-able value with secrets revealed: what is stored (secrets then encrypted)."""
    if isinstance(value, SecretStr | SecretBytes):
        value = value.get_secret_value()
        return value.decode() if isinstance(value, bytes) else value
    if isinstance(value, BaseModel):
        return {f: stored_form(getattr(value, f)) for f in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(k): stored_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [stored_form(v) for v in value]
    return to_jsonable_python(value)


def is_secret(annotation: Any, _seen: frozenset[type] = frozenset()) -> bool:
    """Whether a field holds a secret anywhere inside (``SecretStr``, nested models too)."""
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr | SecretBytes):
            return True
        if issubclass(annotation, BaseModel) and annotation not in _seen:  # recursive models
            inner = _seen | {annotation}
            return any(is_secret(i.annotation, inner) for i in annotation.model_fields.values())
    return any(is_secret(arg, _seen) for arg in get_args(annotation))


def wants_json(annotation: Any) -> bool:
    """Collections and models come from the environment as JSON (like pydantic-settings)."""
    origin = get_origin(annotation)
    if origin is Union or origin is Annotated or origin is types.UnionType:
        return any(wants_json(arg) for arg in get_args(annotation))
    target = origin if origin is not None else annotation
    if not isinstance(target, type) or issubclass(target, str | bytes):
        return False
    return issubclass(target, Collection | BaseModel) or is_dataclass(target)
