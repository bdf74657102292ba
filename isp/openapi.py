"""The OpenAPI document: quart-schema's, completed with what it cannot see.

quart-schema describes bodies and success responses it validates. This provider adds,
for every operation, the problem+json answers it can give (401/403 from the guard, 404
for path ids, 400/413/415/422 for bodies, 422 for query strings, 503 where plugin hooks
run, plus what :func:`document` declares), a success response where the route validates
none, and the id bounds of path parameters. :func:`document` carries what a route knows about itself
(query parameters, multipart bodies, extra statuses) to the document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from quart_schema import OpenAPIProvider
from werkzeug.routing import BaseConverter, IntegerConverter, Rule

from isp.http_input import MAX_ID

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE: Final = "__isp_openapi__"
PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: Final = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}},
            },
        },
        "plugin": {"description": "the plugin that stopped the workflow"},
        "hook": {"description": "its function, module-relative: `handlers.provision`"},
        "event": {"description": "the event the hook ran for: `service_provision`"},
        "function": {"description": "the same as `hook` (its earlier name)"},
    },
    "additionalProperties": True,
}
REASONS: Final = {
    400: "malformed request (body not JSON, not UTF-8, empty, nested too deep)",
    401: "missing, invalid, expired or revoked token",
    403: "the token lacks the scope or its user the permission",
    404: "no such record",
    409: "refused: the record's state or what depends on it is in the way",
    413: "the body is larger than ISP_MAX_BODY (a plugin zip: ISP_PLUGIN_MAX_UPLOAD)",
    415: "the body is not application/json",
    422: "invalid input: `errors` names each field",
    502: "a plugin hook crashed",
    503: "the database or the object store does not answer, or a plugin hook cannot run now "
    "(its plugin is quarantined or all its threads are busy)",
    504: "a plugin hook timed out",
}
JSON_OBJECT: Final = {"application/json": {"schema": {"type": "object"}}}
NULLABLE_STRING: Final = {"type": ["string", "null"]}
PLUGIN_REF: Final = {"$ref": "#/components/schemas/Plugin"}
PLUGIN_SCHEMA: Final = {
    "type": "object",
    "required": ["name", "version", "enabled", "status", "source", "signature", "isolation"],
    "properties": {
        "name": {"type": "string"},
        "version": NULLABLE_STRING,
        "description": {"type": "string"},
        "hooks": {"type": "array", "items": {"type": "string"}},
        "enabled": {"type": "boolean"},
        "status": {"type": "string", "enum": ["active", "disabled", "error"]},
        "error": NULLABLE_STRING,
        "reload_error": NULLABLE_STRING,
        "sha256": NULLABLE_STRING,
        "source": {"type": "string"},
        "loaded_at": {"type": ["string", "null"], "format": "date-time"},
        "requires": {"type": "object", "additionalProperties": {"type": "string"}},
        "required_by": {"type": "array", "items": {"type": "string"}},
        "signature": {
            "type": "string",
            "enum": ["signed", "unsigned", "invalid", "modified"],
            "description": "signed: by a key of ISP_PLUGIN_TRUSTED_KEYS; unsigned: no "
            "signature, or one by a key not trusted here (see signer); invalid: malformed or "
            "does not verify; modified: a file differs from, is missing from or was added to "
            "the signed list",
        },
        "signer": {**NULLABLE_STRING, "description": "id of the key whose signature verifies"},
        "isolation": {
            "type": "string",
            "enum": ["in_process", "sandbox"],
            "description": "sandbox: the plugin runs in a worker process of its own under "
            "bubblewrap, never imported by the service",
        },
        "permissions": {
            "type": "object",
            "properties": {"network": {"type": "boolean"}, "secrets": {"type": "boolean"}},
            "description": "the manifest permissions granted (POST /plugins/upload?grant=)",
        },
        "quarantined": NULLABLE_STRING,
        "stats": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
PLUGIN_JSON: Final = {"application/json": {"schema": PLUGIN_REF}}


def query_param(
    name: str, schema: dict[str, Any], description: str = "", required: bool = False
) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


ID_SCHEMA: Final = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
FLAG_SCHEMA: Final = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}


def document(
    *,
    statuses: tuple[int, ...] = (),
    query: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    responses: dict[int, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Declare what the document cannot infer: error ``statuses``, ``query`` parameters,
    a non-JSON request ``body``, success ``responses`` without a validated model."""

    def decorate(func: F) -> F:
        setattr(
            func,
            ATTRIBUTE,
            {"statuses": statuses, "query": query, "body": body, "responses": responses or {}},
        )
        return func

    return decorate


class ISPOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        document_ = super().schema()
        document_["components"]["schemas"]["Problem"] = PROBLEM_SCHEMA
        document_["components"]["schemas"]["Plugin"] = PLUGIN_SCHEMA
        return document_

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, IntegerConverter):
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
        return parameter

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        extra: dict[str, Any] = getattr(func, ATTRIBUTE, None) or {}
        for operations in paths.values():
            for method, operation in list(operations.items()):
                operations[method] = _complete(dict(operation), func, rule, extra)
        return paths, components


def _complete(
    operation: dict[str, Any], func: Callable[..., Any], rule: Rule, extra: dict[str, Any]
) -> dict[str, Any]:
    responses = dict(operation.get("responses") or {})
    parameters = list(operation.get("parameters") or []) + list(extra.get("query", ()))
    operation["parameters"] = parameters
    if extra.get("body") is not None:
        operation["requestBody"] = extra["body"]
    for status, response in (extra.get("responses") or {}).items():
        responses[status] = response
    if not any(200 <= int(code) < 300 for code in responses):
        responses[200] = {"description": "OK", "content": JSON_OBJECT}
    statuses: set[int] = set(extra.get("statuses", ()))
    if getattr(func, "__isp_scope__", None) is not None:
        statuses |= {401, 403}
    if rule.arguments:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 422}
        if extra.get("body") is None:
            statuses |= {400, 415}
    if 504 in statuses:  # runs plugin hooks: a quarantined or busy plugin answers 503
        statuses.add(503)
    if any(p.get("in") == "query" for p in parameters):
        statuses.add(422)
    for status in sorted(statuses):
        responses.setdefault(
            status,
            {
                "description": REASONS.get(status, "error"),
                "content": {"application/problem+json": {"schema": PROBLEM_REF}},
            },
        )
    operation["responses"] = {str(code): value for code, value in responses.items()}
    if "security" not in operation and getattr(func, "__isp_scope__", None) is None:
        operation["security"] = []
    return operation


def annotate(app: Any, docs: dict[str, dict[str, Any]]) -> None:
    """Apply :func:`document` to routes by endpoint name (routes defined elsewhere)."""
    for endpoint, values in docs.items():
        document(**values)(app.view_functions[endpoint])


ZIP_UPLOAD: Final = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}
SETTINGS_BODY: Final = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}
PLUGIN_ROUTE_DOCS: Final[dict[str, dict[str, Any]]] = {
    "plugins.upload_plugin": {
        "statuses": (400, 409, 413, 422, 503),
        "body": ZIP_UPLOAD,
        "query": (
            query_param("force", FLAG_SCHEMA, "allow an older version"),
            query_param("grant", {"type": "string"}, "permissions granted: network,secrets"),
        ),
        "responses": {
            200: {"description": "upgraded, or the same zip again", "content": PLUGIN_JSON},
            201: {"description": "installed", "content": PLUGIN_JSON},
        },
    },
    "plugins.list_plugins": {
        "responses": {
            200: {
                "description": "every plugin",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["plugins"],
                            "properties": {"plugins": {"type": "array", "items": PLUGIN_REF}},
                        }
                    }
                },
            }
        }
    },
    "plugins.get_plugin": {
        "responses": {200: {"description": "one plugin", "content": PLUGIN_JSON}}
    },
    "plugins.enable_plugin": {
        "statuses": (409, 422),
        "responses": {200: {"description": "enabled", "content": PLUGIN_JSON}},
    },
    "plugins.disable_plugin": {
        "statuses": (409, 422),
        "responses": {200: {"description": "disabled", "content": PLUGIN_JSON}},
        "query": (query_param("cascade", FLAG_SCHEMA, "disable dependants first"),),
    },
    "plugins.uninstall_plugin": {
        "statuses": (409, 422, 503),
        "query": (
            query_param("purge", FLAG_SCHEMA, "drop the plugin's data and settings"),
            query_param("cascade", FLAG_SCHEMA, "uninstall dependants first"),
        ),
        "responses": {204: {"description": "uninstalled"}},
    },
    "plugin_settings.put_settings": {"statuses": (409, 422), "body": SETTINGS_BODY},
}
