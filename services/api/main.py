"""api: HTTP entry point (runs, agents, dead letters)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.runtime.api import handle_api


@functions_framework.aio.http
async def api(request: Request) -> Response:
    return await handle_api(request, await get_deps("api"))
