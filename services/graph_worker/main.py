"""graph_worker: the Cloud Tasks callbacks of graph workflows' push-dispatched node types:
node tasks (``/tasks/graph-node``, a queue per node type and band) and superstep wake-ups at
lease expiry (``/tasks/graph-wake``). ``cloudagents.graphs.push`` has the use cases."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.bootstrap import get_deps
from cloudagents.graphs.documents import SuperstepWake, TaskMessage
from cloudagents.graphs.push import push_worker_for
from cloudagents.runtime.push import handle_task, parse_json_model
from cloudagents.topology import GRAPH_TASK_PATH, GRAPH_WAKE_PATH


@functions_framework.aio.http
async def graph_worker(request: Request) -> Response:
    if request.method == "GET" and request.url.path == "/healthz":
        return JSONResponse({"status": "ok"})
    deps = await get_deps("graph_worker")
    worker = push_worker_for(deps.settings)
    if request.url.path == GRAPH_WAKE_PATH:

        async def wake(body: bytes) -> str:
            return await worker.handle_wake(parse_json_model(SuperstepWake, body))

        return await handle_task(request, deps, wake)
    if request.url.path == GRAPH_TASK_PATH:

        async def run(body: bytes) -> str:
            return await worker.handle_node(parse_json_model(TaskMessage, body))

        return await handle_task(request, deps, run)
    return JSONResponse({"error": f"no route {request.url.path}"}, status_code=404)
