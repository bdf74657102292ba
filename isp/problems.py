"""Every error as ``application/problem+json`` (RFC 9457): one place maps them all.

ISPError renders itself (an unavailable database or object store with ``Retry-After``);
quart-schema's validation errors become 422 with the failing
field paths; werkzeug's HTTP errors (404, 405, 413 ...) keep their status; anything else
is a 500 whose detail says nothing about internals (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, request
from quart_schema import RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError
from tortoise.exceptions import ValidationError as FieldValueError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from isp.availability import RETRY_AFTER_SECONDS
from isp.errors import MAX_LISTED, ISPError, ValidationFailed

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(problem, default=str), status=int(problem["status"]), mimetype=PROBLEM_JSON
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def validation_errors(exc: ValidationError, prefix: str = "body") -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"loc": ["body", "field"], "msg": ..., "type": ...}]``."""
    return [
        {"loc": [prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ISPError)
    async def _isp_error(exc: ISPError) -> Response:
        headers: dict[str, str] = {}
        if exc.status_code == 503 and exc.component is not None:
            # The component's boundary logged the outage once; a line per request would
            # bury it. The client may try again shortly.
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        elif exc.status_code >= 500:
            log.warning(
                "request failed",
                extra={"path": request.path, "status": exc.status_code, "detail": exc.detail},
            )
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return problem_response(exc.to_problem(), headers)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        inner = exc.validation_error
        part = "query" if isinstance(exc, QuerystringValidationError) else "body"
        if isinstance(inner, ValidationError):
            errors = validation_errors(inner, part)
            where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:MAX_LISTED])
            if len(errors) > MAX_LISTED:
                where += f" and {len(errors) - MAX_LISTED} more"
            label = "query string" if part == "query" else "request body"
            problem = ValidationFailed(f"invalid {label}: {where}", errors=errors)
        else:
            problem = ValidationFailed(
                "the request body is not valid JSON or not an object",
                errors=[{"loc": ["body"], "msg": str(inner) or "malformed body"}],
            )
        return problem_response(problem.to_problem())

    @app.errorhandler(FieldValueError)
    async def _field_error(exc: FieldValueError) -> Response:
        # a value the request models let through but a column refuses: still the input
        log.warning("a value passed request validation but not the model's", exc_info=exc)
        return problem_response(
            ValidationFailed(
                f"invalid value: {exc}", errors=[{"loc": ["body"], "msg": str(exc)}]
            ).to_problem()
        )

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return problem_response(
            {
                "type": f"https://isp-framework.dev/problems/http-{status}",
                "title": exc.name,
                "status": status,
                "detail": exc.description or exc.name,
            },
            headers,
        )

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path})
        return problem_response(
            {
                "type": "https://isp-framework.dev/problems/internal",
                "title": "Internal Server Error",
                "status": 500,
                "detail": "the server failed to handle the request; the error is logged",
            }
        )
