"""context_snapshotter: push endpoint for ``{ws}-snapshots``."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.bootstrap import get_deps
from cloudagents.domain.runs import SnapshotMessage
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.push import PushMessage, handle_push, parse_json_model
from cloudagents.runtime.snapshotter import ContextSnapshotter

_snapshotter: ContextSnapshotter | None = None


def snapshotter_for(deps: Deps) -> ContextSnapshotter:
    """One snapshotter per process (per ``Deps``), so its message windows outlive a request."""
    global _snapshotter
    if _snapshotter is None or _snapshotter.deps is not deps:
        _snapshotter = ContextSnapshotter(deps)
    return _snapshotter


@functions_framework.aio.http
async def context_snapshotter(request: Request) -> Response:
    deps = await get_deps("context_snapshotter")
    snapshotter = snapshotter_for(deps)

    async def apply(message: PushMessage) -> str:
        return await snapshotter.handle(parse_json_model(SnapshotMessage, message.data))

    return await handle_push(request, deps, request.url.path, apply)
