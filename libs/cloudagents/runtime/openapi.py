"""The api's OpenAPI 3.1 document, generated from its route table (``runtime/api.py:ROUTES``):
one operation per route, its request body's schema from the same pydantic model that validates
it (``components/schemas``), path parameters from the template, and the route's declared query
and header parameters and status codes. Nothing here names a route: a route added to the table
is documented, and a route that is not routed cannot be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from cloudagents.runtime.routing import ID_PATTERN, TOKEN_PARAM, Param, Route

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_DESCRIPTIONS = {
    101: "switching to the WebSocket protocol",
    200: "OK",
    201: "created",
    202: "accepted",
    400: "the body or a parameter cannot be parsed",
    401: "no valid bearer token",
    403: "the caller may not do this",
    404: "not found",
    405: "method not allowed",
    409: "conflict with the resource's state",
    422: "the body does not validate (problems lists where)",
    426: "a WebSocket endpoint: upgrade",
}


def _param(param: Param) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": param.name, "in": param.where, "schema": dict(param.schema)}
    if param.description:
        doc["description"] = param.description
    return doc


def _responses(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code in route.responses:
        doc: dict[str, Any] = {"description": _DESCRIPTIONS.get(code, "")}
        if code >= 400:
            doc["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        elif code != 101 and route.content is not None:
            schema = {"type": "object"} if route.content == "application/json" else {}
            doc["content"] = {route.content: {"schema": schema or {"type": "string"}}}
        responses[str(code)] = doc
    return responses


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(route.path_schemas.get(name, {"type": "string", "pattern": ID_PATTERN})),
        }
        for name in route.path_params
    ]
    parameters += [_param(p) for p in route.params]
    if route.query_token:
        parameters.append(_param(TOKEN_PARAM))
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _component(route.body, components)}},
        }
    if route.public:
        operation["security"] = []
    operation["responses"] = _responses(route)
    return operation


def _component(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    """The model's schema under ``components/schemas`` (its ``$defs`` beside it); a reference."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(routes: Sequence[Route], *, version: str = "0.1.0") -> dict[str, Any]:
    """The document for ``routes``, paths in the table's order."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloudagents api",
            "version": version,
            "description": "Runs, agents, approvals, events and dead letters of a cloudagents "
            "workspace. Every operation but the public files and /healthz needs "
            "`Authorization: Bearer <token>`.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
