"""tool_invoker: push endpoint for ``{ws}-tools``."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.runs import ToolMessage
from cloudagents.runtime.invoker import ToolInvoker
from cloudagents.runtime.push import PushMessage, handle_push, parse_json_model


@functions_framework.aio.http
async def tool_invoker(request: Request) -> Response:
    deps = await get_deps("tool_invoker")

    async def apply(message: PushMessage) -> str:
        return await ToolInvoker(deps).handle(parse_json_model(ToolMessage, message.data))

    return await handle_push(request, deps, request.url.path, apply)
