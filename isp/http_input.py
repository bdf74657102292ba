"""The one way a request's input is read: JSON bodies, ids in paths, query values.

Every route that takes JSON reads it through :class:`ISPRequest.get_json` (quart-schema's
``validate_request`` included), so each rule holds for all of them at once:

- a body that is not ``application/json`` is 415, an empty one 400, both saying
  "send JSON with Content-Type: application/json";
- bytes that are not UTF-8 are 400, JSON that does not parse 400 with where it broke,
  JSON nested deeper than :data:`MAX_DEPTH` 400 (before the parser could recurse);
- a NUL character anywhere in a string or key is 422 naming where (PostgreSQL refuses
  NUL in text, SQLite would store it silently);
- a body over ``ISP_MAX_BODY`` is 413 before it is read whole: Quart's body buffer stops
  at the limit, whether the client sent a ``Content-Length`` or streamed it chunked.
  Only the upload route (:data:`UPLOAD_PATHS`) buffers up to ``ISP_PLUGIN_MAX_UPLOAD``.

Numbers in bodies are strict (:data:`Id` and the schemas' other integers): ``true``,
``"5"`` and ``2.0`` are not integers.

Ids fit the database's integer columns (:data:`MAX_ID`, PostgreSQL's ``integer``): a path
id beyond it matches no route (404), a body or query id is 422.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, StrictInt
from quart import Request, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from isp.errors import BadRequest, ISPError, PayloadTooLarge, ValidationFailed

MAX_ID: Final = 2**31 - 1
MAX_DEPTH: Final = 32
SEND_JSON: Final = "send JSON with Content-Type: application/json"
UPLOAD_PATHS: Final = frozenset({"/plugins/upload"})
"""Routes whose body is a plugin zip, buffered up to ``ISP_PLUGIN_MAX_UPLOAD``."""

Id = Annotated[StrictInt, Field(gt=0, le=MAX_ID)]
"""A record id in a body or query string: positive and within the database's integer."""


class UnsupportedMediaType(ISPError):
    status = 415
    title = "Unsupported Media Type"
    type_slug = "unsupported-media-type"


class UnknownId(int):
    """A path id beyond :data:`MAX_ID`: no record has it. It queries as 0 (which matches
    nothing on either database) and prints as the digits sent, so the 404 names them."""

    text: str

    def __new__(cls, text: str) -> UnknownId:
        value = super().__new__(cls, 0)
        value.text = text
        return value

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self.text, spec)


class IdConverter(IntegerConverter):
    """``<int:...>`` path segments. An id beyond the database's integer still matches its
    route (refusing the match would turn a 404 into a 405 for the route's other methods)
    and becomes an :class:`UnknownId`, which the route answers with 404."""

    def to_python(self, value: str) -> int:
        if len(value) > 10 or int(value) > MAX_ID:
            return UnknownId(value)
        return int(value)


class ISPRequest(Request):
    """Quart's request with one strict JSON body parser (see the module docstring).

    The app's ``MAX_CONTENT_LENGTH`` (``ISP_MAX_BODY``) bounds every body; an app built
    by :func:`request_class` raises it to ``upload_limit`` for :data:`UPLOAD_PATHS`. The
    limit is set when the request is built, before any body byte is buffered.
    """

    upload_limit: ClassVar[int | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.upload_limit is not None and self.path in UPLOAD_PATHS:
            self.max_content_length = self.upload_limit
            self.body = self.body_class(self.content_length, self.upload_limit)

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        try:
            result = await self._parse_json(force)
        except PayloadTooLarge:
            raise  # never silenced: the client must learn the limit, not "not an object"
        except ISPError:
            if not silent:
                raise
            result = None
        if cache:
            self._cached_json[silent] = result
        return result

    async def _parse_json(self, force: bool) -> Any:
        if not (force or self.is_json):
            shown = self.mimetype or "none"
            raise UnsupportedMediaType(f"the body's content type is {shown}: {SEND_JSON}")
        try:
            raw = await self.get_data(cache=True, as_text=False)
        except RequestEntityTooLarge:
            raise too_large(self.max_content_length) from None
        assert isinstance(raw, bytes)
        if not raw.strip():
            raise BadRequest(f"the request body is empty: {SEND_JSON}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the request body is not UTF-8 (byte {exc.start} is invalid): {SEND_JSON}"
            ) from None
        _check_depth(text)
        try:
            data = json.loads(text)
        except RecursionError:
            raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON ({exc}): {SEND_JSON}") from None
        _refuse_nul(data, ["body"])
        return data


def request_class(upload_limit: int) -> type[ISPRequest]:
    """The request class of one app: uploads buffered up to ``upload_limit`` bytes."""
    return type("ISPRequest", (ISPRequest,), {"upload_limit": upload_limit})


def too_large(limit: int | None) -> PayloadTooLarge:
    """The 413 of a JSON body over ``ISP_MAX_BODY``."""
    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes (ISP_MAX_BODY)", limit=limit
    )


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before parsing (brackets inside strings skipped)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def _refuse_nul(value: Any, loc: list[str | int]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise _nul(loc)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise _nul([*loc, key.replace("\x00", "\\u0000")])
            _refuse_nul(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, [*loc, index])


def _nul(loc: list[str | int]) -> ValidationFailed:
    where = ".".join(str(part) for part in loc)
    return ValidationFailed(
        f"{where} contains a NUL character, which no text field may hold",
        errors=[{"loc": loc, "msg": "NUL characters are not allowed"}],
    )


async def refuse_nul_in_query() -> None:
    """``before_request``: a NUL in a query string key or value is 422 naming it.

    Async on purpose: Quart runs a plain function hook in a worker thread, a thread
    round trip on every request for a check that takes microseconds."""
    if not request.query_string:
        return
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise _nul(["query", key.replace("\x00", "\\u0000")])


def query_id(name: str) -> int | None:
    """The optional id in query parameter ``name``; 422 unless a positive id."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and 0 < int(raw) <= MAX_ID):
        raise ValidationFailed(
            f"query parameter {name!r} must be an id between 1 and {MAX_ID}",
            errors=[{"loc": ["query", name], "msg": f"must be an integer from 1 to {MAX_ID}"}],
        )
    return int(raw)


def flag(name: str) -> bool:
    """A true/false query parameter (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    value = request.args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValidationFailed(
            f"query parameter {name!r} must be true or false",
            errors=[{"loc": ["query", name], "msg": "must be true or false"}],
        )
    return value in ("true", "1", "yes")
