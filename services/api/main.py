"""api: HTTP entry point (runs, agents, events, dead letters).

``api`` is the functions-framework target (HTTP only, Server-Sent Events included).
``asgi_app()`` adds the WebSocket route to it: ``uvicorn --factory --app-dir services/api
main:asgi_app`` (with ``websockets`` or ``wsproto`` installed) serves both.
"""

from pathlib import Path

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.runtime.api import handle_api
from cloudagents.runtime.app import ASGIApp, build_api_app


@functions_framework.aio.http
async def api(request: Request) -> Response:
    return await handle_api(request, await get_deps("api"))


def asgi_app() -> ASGIApp:
    """The api with ``/runs/{id}/events/ws`` (functions-framework's app routes HTTP only)."""
    return build_api_app(Path(__file__).resolve(), lambda: get_deps("api"))
