"""A sandboxed plugin's settings model, as the host rebuilds it from the JSON schema its
worker reported: the plugin's own class never runs in the service.

The stand-in checks what a JSON schema can say (types, enums, bounds, lengths, patterns,
required fields, defaults) so that ``PUT /plugins/<name>/settings`` answers 422 for a bad
value as it does for an in-process plugin; ``format: password`` fields are ``SecretStr``,
so they are encrypted at rest and masked like any secret setting. Whatever the schema
cannot say (a custom validator) the worker checks again with the real model, falling back
to the default with a warning, as for a stored value that no longer validates.
``model_json_schema()`` of the stand-in is the plugin's own schema, which the API shows.

:func:`worker_values` is what the worker is sent: the values stored or set by
``ISP_PLUGIN_<NAME>__<FIELD>``, never the defaults (the worker's model has its own), and
secret fields only when the operator granted ``secrets``.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model

from isp.errors import PluginInvalid
from isp.plugins.settings_values import is_secret, stored_form

MAX_DEPTH: Final = 16  # deeper than any real settings model; a hostile schema stops here
MAX_FIELDS: Final = 500

_SCALARS: Final[dict[str, Any]] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}
_NUMBER: Final = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt",
                  "exclusiveMaximum": "lt", "multipleOf": "multiple_of"}  # fmt: skip
_BOUNDS: Final[dict[str, dict[str, str]]] = {
    "integer": _NUMBER,
    "number": _NUMBER,
    "string": {"minLength": "min_length", "maxLength": "max_length", "pattern": "pattern"},
    "array": {"minItems": "min_length", "maxItems": "max_length"},
}


class ReportedSettings(BaseModel):
    """Base of every stand-in: the schema shown is the one the plugin reported."""

    model_config = ConfigDict(extra="ignore")
    reported_schema: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return cls.reported_schema


def model_from_schema(plugin: str, schema: Any) -> type[BaseModel]:
    """The stand-in for ``plugin``'s settings model; ``PluginInvalid`` for a schema that
    is not an object schema with valid field names."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("properties", {}), Mapping):
        raise _invalid(plugin, "its settings schema is not a JSON schema of an object")
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = schema.get("required", [])
    if len(properties) > MAX_FIELDS or not isinstance(required, list):
        why = f"its settings schema has a bad 'required' or over {MAX_FIELDS} fields"
        raise _invalid(plugin, why)
    definitions = schema.get("$defs", {})
    definitions = definitions if isinstance(definitions, Mapping) else {}
    fields: dict[str, Any] = {}
    for name, prop in properties.items():
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise _invalid(plugin, f"settings field {name!r} is not a valid field name")
        annotation = _annotation(prop, definitions, 0)
        if name in required:
            fields[name] = (annotation, ...)
        elif isinstance(prop, Mapping) and "default" in prop:
            fields[name] = (annotation, prop["default"])
        else:  # a default_factory the schema cannot show: the worker has the real one
            fields[name] = (Optional[annotation], None)  # noqa: UP045 - may be Any
    try:
        model = create_model(f"{plugin}_settings", __base__=ReportedSettings, **fields)
    except Exception as exc:  # noqa: BLE001 - the schema is the plugin's: a bad regex, ...
        why = " ".join(str(exc).split())[:300]
        raise _invalid(plugin, f"its settings schema cannot be used: {why}") from None
    model.reported_schema = dict(schema)
    return model


def worker_values(instance: BaseModel, *, secrets: bool) -> dict[str, Any]:
    """The values a worker is sent: those stored or from the environment, secrets only
    with the ``secrets`` grant."""
    fields = type(instance).model_fields
    return {
        name: stored_form(getattr(instance, name))
        for name in sorted(instance.model_fields_set)
        if name in fields and (secrets or not is_secret(fields[name].annotation))
    }


def _annotation(prop: Any, definitions: Mapping[str, Any], depth: int) -> Any:
    """The Python type a JSON schema stands for; ``Any`` where it says nothing usable."""
    if depth > MAX_DEPTH or not isinstance(prop, Mapping):
        return Any
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _annotation(definitions.get(ref.removeprefix("#/$defs/")), definitions, depth + 1)
    if "const" in prop and _scalar(prop["const"]):
        return Literal[prop["const"]]
    enum = prop.get("enum")
    if isinstance(enum, list) and enum and all(_scalar(v) for v in enum):
        return Literal[tuple(enum)]
    for combinator in ("anyOf", "oneOf"):
        options = prop.get(combinator)
        if isinstance(options, list) and options:
            return Union[tuple(_annotation(o, definitions, depth + 1) for o in options)]  # noqa: UP007
    every = prop.get("allOf")
    if isinstance(every, list) and len(every) == 1:
        return _annotation(every[0], definitions, depth + 1)
    kind = prop.get("type")
    if isinstance(kind, list) and kind:
        return Union[tuple(_annotation({**prop, "type": k}, definitions, depth + 1) for k in kind)]  # noqa: UP007
    if kind == "string" and prop.get("format") == "password":
        return SecretStr
    if kind == "array":
        found: Any = list[_annotation(prop.get("items", {}), definitions, depth + 1)]  # type: ignore[misc]
    elif kind == "object":
        extra = prop.get("additionalProperties")
        value = _annotation(extra, definitions, depth + 1) if isinstance(extra, Mapping) else Any
        found = dict[str, value]  # type: ignore[valid-type]
    elif isinstance(kind, str) and kind in _SCALARS:
        found = _SCALARS[kind]
    else:
        return Any
    bounds = {
        constraint: prop[key]
        for key, constraint in _BOUNDS.get(kind, {}).items()
        if isinstance(prop.get(key), str if key == "pattern" else int | float)
        and not isinstance(prop[key], bool)
    }
    return Annotated[found, Field(**bounds)] if bounds else found


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _invalid(plugin: str, why: str) -> PluginInvalid:
    return PluginInvalid(f"plugin {plugin!r}: {why}", plugin=plugin)
