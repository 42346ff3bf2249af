"""context_snapshotter: push endpoint for ``{ws}-snapshots``."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.runs import SnapshotMessage
from cloudagents.runtime.push import PushMessage, handle_push, parse_json_model
from cloudagents.runtime.snapshotter import ContextSnapshotter


@functions_framework.aio.http
async def context_snapshotter(request: Request) -> Response:
    deps = await get_deps("context_snapshotter")

    async def apply(message: PushMessage) -> str:
        return await ContextSnapshotter(deps).handle(
            parse_json_model(SnapshotMessage, message.data)
        )

    return await handle_push(request, deps, request.url.path, apply)
