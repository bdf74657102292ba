"""Route return values to JSON-ready data, as quart-schema converts them, without its cost.

quart-schema wraps ``app.make_response`` so a route may return pydantic models, dicts
and lists of them. For a dict or list it builds a new ``pydantic.TypeAdapter`` on every
response (a schema build: ~100 µs, the largest per-request cost of a plain JSON answer).
:func:`install_response_conversion` puts this wrapper in place of quart-schema's: the
same conversion rules and options, with one adapter per type kept for the process.
Anything other than a model, dict or list goes through quart-schema's own ``model_dump``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter
from quart import Quart
from quart_schema.casing import snake_to_camel, snake_to_kebab
from quart_schema.conversion import model_dump
from werkzeug.exceptions import HTTPException

_adapters: dict[type, TypeAdapter[Any]] = {}


def _adapter(kind: type) -> TypeAdapter[Any]:
    found = _adapters.get(kind)
    if found is None:
        found = _adapters[kind] = TypeAdapter(kind)
    return found


class _Converter:
    """quart-schema's ``convert_response_return_value`` for one app's settings."""

    def __init__(self, app: Quart) -> None:
        self.camelize = bool(app.config["QUART_SCHEMA_CONVERT_CASING"])
        self.preference = app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"]
        self.options: dict[str, Any] = dict(app.config["QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"])

    def dump(self, raw: Any, *, camelize: bool = False, kebabize: bool = False) -> Any:
        kind = type(raw)
        if kind is dict or kind is list:
            if self.preference == "msgspec":
                return self._library(raw, camelize=camelize, kebabize=kebabize)
            value = _adapter(kind).dump_python(raw, **self.options)
        elif isinstance(raw, BaseModel):
            value = raw.model_dump(**self.options)
        else:
            return self._library(raw, camelize=camelize, kebabize=kebabize)
        if camelize:
            return snake_to_camel(value)
        if kebabize:
            return snake_to_kebab(value)
        return value

    def _library(self, raw: Any, *, camelize: bool, kebabize: bool) -> Any:
        return model_dump(
            raw,
            camelize=camelize,
            kebabize=kebabize,
            preference=self.preference,
            pydantic_kwargs=self.options,  # type: ignore[arg-type]
        )

    def convert(self, result: Any) -> Any:
        if isinstance(result, HTTPException):
            return result
        if not isinstance(result, tuple):
            return self.dump(result, camelize=self.camelize)
        if len(result) == 3:
            value, status, headers = result
            return (
                self.dump(value, camelize=self.camelize),
                status,
                self.dump(headers, kebabize=True),
            )
        if len(result) == 2:
            value, status_or_headers = result
            if isinstance(status_or_headers, int):
                return self.dump(value, camelize=self.camelize), status_or_headers
            return self.dump(value, camelize=self.camelize), self.dump(
                status_or_headers, kebabize=True
            )
        return result


def install_response_conversion(app: Quart) -> None:
    """Replace quart-schema's ``make_response`` wrapper (QuartSchema must be set up)."""
    wrapped: Callable[[Any], Awaitable[Any]] = app.make_response
    original = getattr(wrapped, "__wrapped__", None)
    if original is None:
        raise RuntimeError("QuartSchema(app) must run before install_response_conversion")
    converter = _Converter(app)

    async def make_response(result: Any) -> Any:
        return await original(converter.convert(result))

    app.make_response = make_response  # type: ignore[method-assign]
