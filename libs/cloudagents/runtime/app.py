"""The api as one ASGI app: functions-framework's HTTP app (every route of
``runtime/api.py:ROUTES``), the WebSocket routes it cannot route (``runtime/streaming.py``) and
GraphQL at ``/graphql`` (``runtime/graphql.py``). ``services/api/main.py:asgi_app`` serves it
with uvicorn; this module is the one that knows all three, so none of them imports another's
app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from functions_framework.aio import create_asgi_app
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from cloudagents.runtime.graphql import graphql_app
from cloudagents.runtime.streaming import (
    AGENT_STREAM_PATH,
    WORKFLOW_WS_PATH,
    WS_PATH,
    DepsProvider,
    agent_stream_websocket,
    websocket_events,
    workflow_websocket_events,
)

GRAPHQL_PATH = "/graphql"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def build_api_app(source: str | Path, deps_of: DepsProvider) -> ASGIApp:
    """The api as one ASGI app: functions-framework's HTTP app for ``source`` (the ``api``
    target), the WebSocket routes it cannot route, and GraphQL at ``/graphql`` (HTTP and
    ``graphql-transport-ws``). ``deps_of`` gives the process's dependencies (the composition
    root's ``get_deps``)."""
    http_app: ASGIApp = create_asgi_app("api", str(source))  # type: ignore[no-untyped-call]

    async def events_route(websocket: WebSocket) -> None:
        await websocket_events(websocket, deps_of)

    async def agent_stream_route(websocket: WebSocket) -> None:
        await agent_stream_websocket(websocket, deps_of)

    async def workflow_events_route(websocket: WebSocket) -> None:
        await workflow_websocket_events(websocket, deps_of)

    ws_app = Starlette(
        routes=[
            WebSocketRoute(WS_PATH, events_route),
            WebSocketRoute(WORKFLOW_WS_PATH, workflow_events_route),
            WebSocketRoute(AGENT_STREAM_PATH, agent_stream_route),
        ]
    )
    gql = graphql_app(deps_of)

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].rstrip("/") == GRAPHQL_PATH:
            await gql(scope, receive, send)
        elif scope["type"] == "websocket":
            await ws_app(scope, receive, send)
        else:
            await http_app(scope, receive, send)

    return app
