"""The api's stored-function routes (seed 002): store, list, show, versions, execute, history.

Same authentication as every api route (``handle_api`` authenticates before routing); storing a
function is audited like registering an agent. Storing never runs the code: refused code is a
422 with the ``line`` and the ``reason``. ``POST /functions/{name}/execute`` runs the current
version (or ``?version=`` / ``"version"``, a hash or a prefix of 8+) once in a fresh sandbox,
for testing, and answers the typed outcome; the call is in the execution history like any other.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.functions import (
    FunctionAlias,
    FunctionConfig,
    FunctionNotFound,
    FunctionValidationError,
    FunctionVersion,
)
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.routing import Param, Route

_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class StoreFunctionRequest(BaseModel):
    """``POST /functions`` body: seed 002's ``store_function`` arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    code: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, JsonValue] | None = None
    output_schema: dict[str, JsonValue] | None = None
    is_async: bool | None = None
    config: FunctionConfig | None = None


class ExecuteFunctionRequest(BaseModel):
    """``POST /functions/{name}/execute`` body."""

    model_config = ConfigDict(extra="forbid")
    args: dict[str, JsonValue] = Field(default_factory=dict)
    version: str | None = Field(default=None, description="a version hash or a prefix of 8+")


def version_view(version: FunctionVersion, *, code: bool = True) -> dict[str, Any]:
    """A version as the api shows it (``ref`` is what an agent's ``tools`` may name)."""
    view = version.model_dump(mode="json", exclude=None if code else {"code"})
    view["ref"] = version.ref
    return view


def alias_view(alias: FunctionAlias) -> dict[str, Any]:
    return {
        "name": alias.name,
        "current": alias.current,
        "versions": len(dict.fromkeys(alias.history)),
        "updated_at": alias.updated_at.isoformat(),
    }


def _ref(name: str, version: str | None) -> str | None:
    """``name`` or ``name@hash``; ``None`` when ``version`` is not a hash (prefix)."""
    if version is None:
        return name
    return f"{name}@{version}" if _HEX.match(version) else None


async def store_function_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import _json_body

    body = StoreFunctionRequest.model_validate(await _json_body(request))
    try:
        version = await deps.functions.store_function(
            body.name,
            body.code,
            description=body.description,
            input_schema=body.input_schema,
            output_schema=body.output_schema,
            is_async=body.is_async,
            config=body.config,
        )
    except FunctionValidationError as exc:
        await audit(deps, action_of(request), principal, "denied", 422, body.name, "code refused")
        return JSONResponse(
            {"error": "function refused", "line": exc.line, "reason": exc.reason}, 422
        )
    await audit(deps, action_of(request), principal, "allowed", 201, version.ref, "function stored")
    return JSONResponse(version_view(version), status_code=201)


async def list_functions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    aliases = await deps.functions.list_functions()
    status = deps.functions.sandbox.status
    return JSONResponse(
        {
            "functions": [alias_view(a) for a in aliases],
            "sandbox": None if status is None else status.model_dump(mode="json"),
        }
    )


async def get_function_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """The current version (or ``?version=``), with the name's history of hashes."""
    from cloudagents.runtime.api import error

    name = params["name"]
    ref = _ref(name, request.query_params.get("version"))
    if ref is None:
        return error(400, "version must be a hash or a prefix of at least 8 hex characters")
    try:
        version = await deps.functions.get_function(ref)
        versions = await deps.functions.versions(name)
    except FunctionNotFound as exc:
        return error(404, str(exc))
    view = version_view(version)
    view["history"] = [v.hash for v in versions]
    return JSONResponse(view)


async def function_versions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    try:
        versions = await deps.functions.versions(params["name"])
    except FunctionNotFound as exc:
        return error(404, str(exc))
    return JSONResponse({"versions": [version_view(v, code=False) for v in versions]})


async def execute_function_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import _json_body, error

    raw = await _json_body(request) if (await request.body()).strip() else {}
    body = ExecuteFunctionRequest.model_validate(raw)
    ref = _ref(params["name"], body.version or request.query_params.get("version"))
    if ref is None:
        return error(400, "version must be a hash or a prefix of at least 8 hex characters")
    outcome = await deps.functions.run_function(ref, dict(body.args))
    if outcome.error_kind == "not_found":
        return error(404, outcome.message)
    await audit(
        deps,
        action_of(request),
        principal,
        "allowed",
        200,
        ref,
        f"executed: {outcome.error_kind or 'ok'}",
    )
    return JSONResponse(outcome.model_dump(mode="json"))


async def function_executions_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """Execution history, newest first: ``?function=``, ``?agent=`` (both, or neither)."""
    from cloudagents.runtime.api import error

    try:
        limit = min(max(int(request.query_params.get("limit", "100")), 1), 500)
    except ValueError:
        return error(400, "limit must be an integer")
    records = await deps.functions.history(
        function=request.query_params.get("function") or None,
        agent=request.query_params.get("agent") or None,
        limit=limit,
    )
    return JSONResponse({"executions": [r.model_dump(mode="json") for r in records]})


_VERSION = Param("version", description="a version hash or a prefix of 8+ (default: current)")
_LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 500})

# fmt: off
FUNCTION_ROUTES: list[Route] = [
    Route("POST", "/functions", store_function_route,
          "Store a function (validated, never run); 422 names the line and the reason",
          (201, 400, 401, 422), body=StoreFunctionRequest),
    Route("GET", "/functions", list_functions_route,
          "Stored functions, and the api's sandbox status", (200, 401)),
    Route("GET", "/functions/{name}", get_function_route,
          "A version of a stored function (its code) and the name's history", (200, 400, 401, 404),
          params=(_VERSION,)),
    Route("GET", "/functions/{name}/versions", function_versions_route,
          "Every version of a stored function, oldest first", (200, 401, 404)),
    Route("POST", "/functions/{name}/execute", execute_function_route,
          "Run a stored function once in the sandbox, for testing", (200, 400, 401, 404, 422),
          body=ExecuteFunctionRequest, params=(_VERSION,)),
    Route("GET", "/function-executions", function_executions_route,
          "Stored functions' execution history, newest first", (200, 400, 401),
          params=(Param("function"), Param("agent"), _LIMIT)),
]
# fmt: on
