"""The api's route table, as data: each route is declared once (method, path template, handler,
summary, request body model, parameters, response codes) and both the router and the OpenAPI
document (``runtime/openapi.py``) are made from the same list (``runtime/api.py:ROUTES``).

Path templates name their parameters in braces, ``/runs/{run_id}/approvals/{approval_id}``; a
parameter matches one path segment, and the router refuses (404) any value that is not a
usable document id (:func:`valid_id`), so no handler sees ``..`` or ``__name__``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps

Handler = Callable[[Request, Deps, dict[str, str], Principal], Awaitable[Response]]
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,300}$"
_ID = re.compile(ID_PATTERN)
_TEMPLATE_PARAM = re.compile(r"\{([a-z_]+)\}")


def valid_id(value: str) -> bool:
    """A usable document id: Firestore refuses '.', '..' and '__x__' names."""
    return (
        bool(_ID.match(value))
        and value not in (".", "..")
        and not (value.startswith("__") and value.endswith("__"))
    )


@dataclass(frozen=True)
class Param:
    """A query or header parameter, as the OpenAPI document describes it (the handler parses it)."""

    name: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    where: Literal["query", "header"] = "query"
    description: str = ""


TOKEN_PARAM = Param(
    "token", description="the bearer token, for clients that cannot set headers (EventSource)"
)


@dataclass(frozen=True)
class Route:
    """One operation of the api. ``responses`` lists every status the handler answers with (the
    401 of authenticated routes included); ``content`` is the success body's media type (None for
    a body that is not documented, as a WebSocket's 101). ``public`` routes need no token (and
    answer ``HEAD`` as ``GET``); ``query_token`` routes take ``?token=`` (a browser's
    ``EventSource`` cannot set headers). ``path_schemas`` narrows a path parameter's schema
    (the default is a document id)."""

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    handler: Handler
    summary: str
    responses: tuple[int, ...]
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    content: str | None = "application/json"
    public: bool = False
    query_token: bool = False
    path_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def path_params(self) -> list[str]:
        return _TEMPLATE_PARAM.findall(self.path)

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[^A-Za-z0-9]+", "_", self.path).strip("_") or "root"
        return f"{self.method.lower()}_{words}"


def compile_template(path: str) -> re.Pattern[str]:
    """``/runs/{run_id}`` -> ``^/runs/(?P<run_id>[^/]+)$`` (the literal parts escaped)."""
    parts, last = [], 0
    for found in _TEMPLATE_PARAM.finditer(path):
        parts.append(re.escape(path[last : found.start()]))
        parts.append(f"(?P<{found.group(1)}>[^/]+)")
        last = found.end()
    parts.append(re.escape(path[last:]))
    return re.compile("^" + "".join(parts) + "$")


@dataclass(frozen=True)
class Resolution:
    """What the router found for a request: the route and its path parameters, or none and the
    methods the path does answer (empty: no such path)."""

    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...]


class Router:
    """The routes' templates, compiled once, matched in declaration order."""

    def __init__(self, routes: Sequence[Route]) -> None:
        seen: set[tuple[str, str]] = set()
        for route in routes:
            key = (route.method, route.path)
            if key in seen:
                raise ValueError(f"route declared twice: {route.method} {route.path}")
            seen.add(key)
        self.routes = tuple(routes)
        self._compiled = [(compile_template(r.path), r) for r in self.routes]

    def resolve(self, method: str, path: str) -> Resolution:
        allowed: list[str] = []
        for pattern, route in self._compiled:
            match = pattern.match(path)
            if match is None:
                continue
            allowed.append(route.method)
            if route.method == method or (
                method == "HEAD" and route.public and route.method == "GET"
            ):
                return Resolution(route, match.groupdict(), tuple(allowed))
        return Resolution(None, {}, tuple(allowed))
