"""The api's graph workflow routes (seed 001, distributed): register a compiled graph, start a
workflow run on it, read, list and cancel runs, list a run's checkpoints, fork a run from a
step, resume a stopped run, and its events (JSON, or SSE at ``/events/stream``).

A run started here is the run ``DistributedOrchestrator.start`` makes (one function,
``graphs/runs.py``): the graph pinned by its hash, checkpoint 0 and the first task documents,
and each task sent in the run's priority band: on its node type's topic
(``{ws}-graph-{node_type}``, ``{ws}-graph_high-{node_type}``, ...), where
``DistributedWorker``s pull it, or, for a push-dispatched node type, as a Cloud Task to the
graph worker service (``graphs/dispatch.py``). The workers' sweep and the superstep wake-ups
re-dispatch a task whose lease expired, so nothing here has to wait on the run.
The node-type topics and subscriptions must exist (a worker's ``start()`` makes them on the
emulators).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.graphs.dispatch import node_dispatch
from cloudagents.graphs.documents import Priority
from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.runs import (
    DEFAULT_DISPATCH_SECONDS,
    Dispatch,
    WorkflowRunError,
    fork_workflow_run,
    resume_workflow_run,
    start_workflow_run,
)
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import DEFAULT_MAX_STEPS
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.routing import ID_PATTERN, TOKEN_PARAM, Param, Route
from cloudagents.runtime.streaming import (
    wants_event_stream,
    websocket_required_route,
    workflow_sse_response,
)
from cloudagents.runtime.workflow_commands import (
    RUN_STATUSES,
    WorkflowCommandError,
    cancel_workflow_run,
    describe_workflow_run,
    workflow_run_view,
    workspace_run,
)

DISPATCH_SECONDS = DEFAULT_DISPATCH_SECONDS


class StartWorkflowRunRequest(BaseModel):
    """``POST /workflows/{graph_hash}/runs`` body."""

    model_config = ConfigDict(extra="forbid")
    initial_state: dict[str, JsonValue] = Field(default_factory=dict)
    workflow_id: str | None = Field(default=None, pattern=ID_PATTERN)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=10_000)
    priority: Priority = "normal"


class ForkWorkflowRunRequest(BaseModel):
    """``POST /workflow-runs/{id}/fork`` body: the step whose checkpoint the new run starts
    from, state keys written over it, and the new run's id, step limit and priority."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0)
    updates: dict[str, JsonValue] = Field(default_factory=dict)
    workflow_id: str | None = Field(default=None, pattern=ID_PATTERN)
    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    priority: Priority | None = None


class ResumeWorkflowRunRequest(BaseModel):
    """``POST /workflow-runs/{id}/resume`` body: optionally a higher step limit (the run's
    total, as ``max_steps`` at its start)."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int | None = Field(default=None, ge=1, le=10_000)


async def _optional_body(request: Request) -> Any:
    """The JSON body; ``{}`` when there is none (``POST .../resume`` needs no body)."""
    from cloudagents.runtime.api import _json_body

    if not (await request.body()).strip():
        return {}
    raw = await _json_body(request)
    return {} if raw is None else raw


def _store(deps: Deps) -> WorkflowStore:
    if deps.workflows is None:
        raise RuntimeError("this process has no workflow store (Deps.workflows)")
    return deps.workflows


def dispatch_for(deps: Deps) -> Dispatch:
    """How this process sends node tasks: Cloud Tasks to the graph worker service for the
    push-dispatched node types, the workspace's node-type topics for the others
    (``graphs/dispatch.py``)."""
    return node_dispatch(
        deps.settings, deps.bus.publish, deps.tasks.schedule, wake_after=DISPATCH_SECONDS
    )


def graph_view(graph: CompiledGraph) -> dict[str, Any]:
    return {"hash": graph.hash, **graph.model_dump(mode="json")}


async def register_workflow_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import _json_body, error

    graph = CompiledGraph.model_validate(await _json_body(request))
    try:
        graph.check_structure()
    except GraphError as exc:
        await audit(deps, action_of(request), principal, "denied", 422, graph.name, str(exc))
        return error(422, str(exc))
    digest = await _store(deps).put_graph(graph)
    await audit(deps, action_of(request), principal, "allowed", 201, digest, "graph stored")
    return JSONResponse(graph_view(graph), status_code=201)


async def list_workflows_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    graphs = await _store(deps).list_graphs()
    return JSONResponse({"workflows": [{"hash": h, "name": n} for h, n in graphs]})


async def get_workflow_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    try:
        graph = await _store(deps).get_graph(params["graph_hash"])
    except KeyError:
        return error(404, f"unknown workflow graph {params['graph_hash']!r}")
    return JSONResponse(graph_view(graph))


async def start_workflow_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``POST /workflows/{graph}/runs``: ``graph`` is a hash or a name (its latest hash)."""
    from cloudagents.runtime.api import _json_body, error

    raw = await _json_body(request)
    body = StartWorkflowRunRequest.model_validate({} if raw is None else raw)
    try:
        run, _ = await start_workflow_run(
            _store(deps),
            dispatch_for(deps),
            workspace=deps.settings.workspace,
            graph=params["graph_hash"],
            initial_state=body.initial_state,
            workflow_id=body.workflow_id,
            max_steps=body.max_steps,
            priority=body.priority,
            dispatch_seconds=DISPATCH_SECONDS,
        )
    except WorkflowRunError as exc:
        return error(exc.status, str(exc))
    wid = run.workflow_id
    await audit(deps, action_of(request), principal, "allowed", 202, wid, "workflow run started")
    return JSONResponse(workflow_run_view(run), status_code=202)


async def fork_workflow_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import _json_body, error

    body = ForkWorkflowRunRequest.model_validate(await _json_body(request))
    try:
        run = await fork_workflow_run(
            _store(deps),
            dispatch_for(deps),
            workspace=deps.settings.workspace,
            workflow_id=params["workflow_id"],
            step=body.step,
            updates=body.updates,
            new_workflow_id=body.workflow_id,
            max_steps=body.max_steps,
            priority=body.priority,
            dispatch_seconds=DISPATCH_SECONDS,
        )
    except WorkflowRunError as exc:
        return error(exc.status, str(exc))
    await audit(
        deps,
        action_of(request),
        principal,
        "allowed",
        202,
        run.workflow_id,
        f"forked from {run.forked_from}",
    )
    return JSONResponse(workflow_run_view(run), status_code=202)


async def resume_workflow_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    body = ResumeWorkflowRunRequest.model_validate(await _optional_body(request))
    try:
        run = await resume_workflow_run(
            _store(deps),
            dispatch_for(deps),
            workspace=deps.settings.workspace,
            workflow_id=params["workflow_id"],
            max_steps=body.max_steps,
            dispatch_seconds=DISPATCH_SECONDS,
        )
    except WorkflowRunError as exc:
        return error(exc.status, str(exc))
    wid = run.workflow_id
    await audit(deps, action_of(request), principal, "allowed", 202, wid, "workflow run resumed")
    return JSONResponse(workflow_run_view(run), status_code=202)


async def list_workflow_runs_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    status = request.query_params.get("status")
    if status is not None and status not in RUN_STATUSES:
        return error(400, f"status must be one of {', '.join(RUN_STATUSES)}")
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        return error(400, "limit must be an integer")
    if not 1 <= limit <= 500:
        return error(400, "limit must be between 1 and 500")
    runs = await _store(deps).list_runs(deps.settings.workspace, status, limit)
    return JSONResponse({"workflow_runs": [workflow_run_view(r) for r in runs]})


async def get_workflow_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    run = await workspace_run(deps, params["workflow_id"])
    if run is None:
        return error(404, f"unknown workflow run {params['workflow_id']!r}")
    return JSONResponse(await describe_workflow_run(deps, run))


async def cancel_workflow_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    wid = params["workflow_id"]
    try:
        ended, children = await cancel_workflow_run(deps, wid)
    except WorkflowCommandError as exc:
        return error(exc.status, str(exc))
    detail = "workflow run cancelled" + (f" with its child runs {children}" if children else "")
    await audit(deps, action_of(request), principal, "allowed", 200, wid, detail)
    return JSONResponse(workflow_run_view(ended) | {"cancelled_child_runs": children})


async def workflow_checkpoints_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    store = _store(deps)
    run = await store.get_run(params["workflow_id"])
    if run is None or run.workspace != deps.settings.workspace:
        return error(404, f"unknown workflow run {params['workflow_id']!r}")
    checkpoints = await store.checkpoints(run.workflow_id)
    return JSONResponse({"checkpoints": [c.model_dump(mode="json") for c in checkpoints]})


async def workflow_events_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /workflow-runs/{id}/events``: stored events after ``?after=`` (JSON), or the SSE
    stream when the client asks for ``text/event-stream``."""
    from cloudagents.runtime.api import error

    wid = params["workflow_id"]
    if await workspace_run(deps, wid) is None:
        return error(404, f"unknown workflow run {wid!r}")
    if wants_event_stream(request):
        return workflow_sse_response(request, _store(deps), wid)
    events = await _store(deps).events(wid, after=request.query_params.get("after") or None)
    return JSONResponse({"events": [e.model_dump(mode="json") for e in events]})


async def workflow_event_stream_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    from cloudagents.runtime.api import error

    wid = params["workflow_id"]
    if await workspace_run(deps, wid) is None:
        return error(404, f"unknown workflow run {wid!r}")
    return workflow_sse_response(request, _store(deps), wid)


_STATUS = Param("status", {"type": "string", "enum": list(RUN_STATUSES)})
_LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 500})
_AFTER = Param("after", {"type": "string"})

# fmt: off
WORKFLOW_ROUTES: list[Route] = [
    Route("POST", "/workflows", register_workflow_route,
          "Register a compiled graph (canonical JSON); stored by its SHA-256",
          (201, 400, 401, 422), body=CompiledGraph),
    Route("GET", "/workflows", list_workflows_route, "Registered graphs", (200, 401)),
    Route("GET", "/workflows/{graph_hash}", get_workflow_route, "One graph, by hash",
          (200, 401, 404)),
    Route("POST", "/workflows/{graph_hash}/runs", start_workflow_run_route,
          "Start a workflow run on a graph (202; workers run its nodes)",
          (202, 400, 401, 404, 409, 422), body=StartWorkflowRunRequest),
    Route("GET", "/workflow-runs", list_workflow_runs_route, "List workflow runs",
          (200, 400, 401), params=(_STATUS, _LIMIT)),
    Route("GET", "/workflow-runs/{workflow_id}", get_workflow_run_route,
          "A workflow run: status, step, pending tasks, state", (200, 401, 404)),
    Route("POST", "/workflow-runs/{workflow_id}/cancel", cancel_workflow_run_route,
          "Cancel a workflow run at its last barrier (409: not running)", (200, 401, 404, 409)),
    Route("GET", "/workflow-runs/{workflow_id}/checkpoints", workflow_checkpoints_route,
          "A workflow run's checkpoints, oldest first", (200, 401, 404)),
    Route("POST", "/workflow-runs/{workflow_id}/fork", fork_workflow_run_route,
          "Start a new run from a step's checkpoint (same graph; state updates optional)",
          (202, 400, 401, 404, 409, 422), body=ForkWorkflowRunRequest),
    Route("POST", "/workflow-runs/{workflow_id}/resume", resume_workflow_run_route,
          "Resume a cancelled, failed or step-limited run from its last checkpoint",
          (202, 400, 401, 404, 409, 422), body=ResumeWorkflowRunRequest),
    Route("GET", "/workflow-runs/{workflow_id}/events", workflow_events_route,
          "A workflow run's events (supersteps, node tasks); SSE with text/event-stream",
          (200, 401, 404), params=(_AFTER,)),
    Route("GET", "/workflow-runs/{workflow_id}/events/stream", workflow_event_stream_route,
          "A workflow run's events as Server-Sent Events, from Last-Event-ID or ?after=",
          (200, 401, 404), content="text/event-stream", params=(_AFTER,), query_token=True),
    Route("GET", "/workflow-runs/{workflow_id}/events/ws", websocket_required_route,
          "WebSocket of a workflow run's events (JSON per message), from ?after=; plain HTTP "
          "gets 426", (101, 401, 404, 426), params=(_AFTER, TOKEN_PARAM), content=None),
]
# fmt: on
