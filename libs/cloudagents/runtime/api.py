"""The HTTP api: its route table (:data:`ROUTES`, one :class:`Route` per operation) and the
handlers that turn a request into a call of a use case, and its outcome into a response. Agent
history and deletion are in ``agents_api.py``, stored functions in ``functions_api.py``; their
routes join :data:`ROUTES`.

The use cases live elsewhere (``runtime/commands.py``: start and cancel runs, register agents,
replay dead letters; ``runtime/approvals.py``: decide approvals; ``runtime/streaming.py``: the
event streams). The OpenAPI document is generated from the table (``runtime/openapi.py``) and
served at ``/openapi.json``, and as Swagger UI at ``/docs``. A route is added by writing its
handler and one ``Route(...)`` line in :data:`ROUTES`.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.context import latest_snapshot
from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.runs import RunRecord, RunStatus
from cloudagents.runtime.agents_api import AGENT_HISTORY_ROUTES
from cloudagents.runtime.approvals import ApprovalError, Approvals
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import AuthError, Principal, authenticate
from cloudagents.runtime.commands import (
    Refused,
    StartRunRequest,
    cancel_run,
    register_agent,
    replay_dead_letter,
    start_run_for,
)
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.functions_api import FUNCTION_ROUTES
from cloudagents.runtime.openapi import openapi_document
from cloudagents.runtime.routing import TOKEN_PARAM, Param, Route, Router, valid_id
from cloudagents.runtime.streaming import (
    agent_stream_route,
    event_stream_route,
    wants_event_stream,
    websocket_required_route,
)
from cloudagents.runtime.swagger import FILES as DOCS_FILES
from cloudagents.runtime.swagger import docs_route
from cloudagents.runtime.transitions_api import TRANSITION_ROUTES
from cloudagents.runtime.trees import run_tree, tree_events
from cloudagents.runtime.ui import ASSETS as UI_FILES
from cloudagents.runtime.ui import ui_route
from cloudagents.runtime.workflows_api import WORKFLOW_ROUTES

log = logging.getLogger(__name__)


class DecideApprovalRequest(BaseModel):
    """``POST /runs/{run_id}/approvals/{approval_id}`` body."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=2000)
    arguments: dict[str, JsonValue] | None = Field(
        default=None, description="edited arguments (approve only), checked against the tool"
    )
    remember: Literal["run", "agent"] | None = None


class GraphQLRequest(BaseModel):
    """``POST /graphql`` body, for the document: strawberry parses it (``runtime/graphql.py``)."""

    query: str
    variables: dict[str, JsonValue] | None = None
    operationName: str | None = None  # GraphQL's own field name


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PermanentMessageError(f"body is not JSON: {exc}") from exc


def one(found: BaseModel | None, what: str, key: str) -> Response:
    """A stored object as JSON, or the 404 that names what was not found."""
    if found is None:
        return error(404, f"unknown {what} {key!r}")
    return JSONResponse(found.model_dump(mode="json"))


def run_view(run: RunRecord) -> dict[str, Any]:
    """The public JSON of a run (no outbox internals)."""
    data = run.model_dump(mode="json", exclude={"outbox"})
    data["exit"] = run.result.exit.value if run.result else None
    return data


async def start_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    body = StartRunRequest.model_validate(await _json_body(request))
    started = await start_run_for(deps, principal, body, action=action_of(request))
    return JSONResponse(
        {
            "run_id": started.run_id,
            "created": started.created,
            "status_url": f"/runs/{started.run_id}",
        },
        status_code=202,
    )


async def get_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    view = run_view(run)
    snapshot = await latest_snapshot(deps.blobs, deps.topology.context_bucket, run)
    view["snapshot"] = snapshot.model_dump(mode="json") if snapshot is not None else None
    view["handoff_chain"] = await _handoff_chain(deps, run)
    letters = await deps.dead_letters.list_dead_letters(run_id=run.run_id)
    view["dead_letters"] = [
        {"id": d.id, "reason": d.reason, "source": d.source, "replayed": d.replayed_at is not None}
        for d in letters
    ]
    return JSONResponse(view)


async def _handoff_chain(deps: Deps, run: RunRecord) -> list[dict[str, Any]]:
    """The runs before and after this one in its handoff chain, oldest first."""

    def link(r: RunRecord) -> dict[str, Any]:
        return {"run_id": r.run_id, "agent_id": r.agent_id, "exit": run_view(r)["exit"]}

    chain, seen = [link(run)], {run.run_id}
    for step in ("parent", "child"):
        current = run
        while True:
            next_id = (
                current.parent_run_id
                if step == "parent"
                else (current.child_run_ids[-1] if current.child_run_ids else None)
            )
            if next_id is None or next_id in seen:
                break
            found = await deps.runs.get_run(next_id)
            if found is None:
                break
            seen.add(found.run_id)
            if step == "parent":
                chain.insert(0, link(found))
            else:
                chain.append(link(found))
            current = found
    return chain


async def list_runs_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    status_text = request.query_params.get("status")
    status = None
    if status_text:
        try:
            status = RunStatus(status_text)
        except ValueError:
            return error(400, f"status must be one of {[s.value for s in RunStatus]}")
    try:
        limit = min(max(int(request.query_params.get("limit", "50")), 1), 500)
    except ValueError:
        return error(400, "limit must be an integer")
    runs = await deps.runs.list_runs(
        agent_id=request.query_params.get("agent"), status=status, limit=limit
    )
    return JSONResponse({"runs": [run_view(r) for r in runs]})


async def cancel_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    run = await cancel_run(deps, params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    return JSONResponse(run_view(run))


async def tree_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """The run and the runs below it: agent-to-agent calls (``how: call``) and handoffs."""
    tree = await run_tree(deps, params["run_id"])
    if tree is None:
        return error(404, f"unknown run {params['run_id']!r}")
    return JSONResponse(tree)


async def messages_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    messages = await deps.runs.messages(run.run_id)
    calls = await deps.runs.model_calls(run.run_id)
    return JSONResponse(
        {
            "run_id": run.run_id,
            "messages": [m.model_dump(mode="json", exclude_defaults=True) for m in messages],
            "model_calls": [c.model_dump(mode="json") for c in calls],
        }
    )


async def events_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    if wants_event_stream(request):
        return await event_stream_route(request, deps, params, principal)
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    if request.query_params.get("tree") in ("1", "true"):
        # With the runs below it (calls and handoffs): each event names its run; in time order.
        tree = await tree_events(deps, run.run_id)
        return JSONResponse({"events": [e.model_dump(mode="json") for e in tree]})
    events = await deps.runs.events(run.run_id, after=request.query_params.get("after"))
    return JSONResponse({"events": [e.model_dump(mode="json") for e in events]})


async def put_agent_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    definition = AgentDefinition.model_validate(await _json_body(request))
    await register_agent(deps, principal, definition, action=action_of(request))
    return JSONResponse(definition.model_dump(mode="json"), status_code=201)


async def list_agents_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    agents = await deps.agents.list_agents()
    return JSONResponse({"agents": [a.model_dump(mode="json") for a in agents]})


async def get_agent_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    return one(await deps.agents.get_agent(params["agent_id"]), "agent", params["agent_id"])


async def get_conversation_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """A conversation: which runs it had, which holds it, and its messages (the last 200)."""
    conversation = await deps.runs.get_conversation(params["conversation_id"])
    if conversation is None:
        return error(404, f"unknown conversation {params['conversation_id']!r}")
    messages = await deps.runs.conversation_messages(conversation.conversation_id, last=200)
    view = conversation.model_dump(mode="json")
    view["messages"] = [m.model_dump(mode="json", exclude_defaults=True) for m in messages]
    return JSONResponse(view)


async def get_handoff_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    offer = await deps.handoffs.get_offer(params["offer_id"])
    return one(offer, "handoff offer", params["offer_id"])


async def list_dead_letters_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    letters = await deps.dead_letters.list_dead_letters()
    return JSONResponse({"dead_letters": [d.model_dump(mode="json") for d in letters]})


async def get_dead_letter_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    letter = await deps.dead_letters.get_dead_letter(params["letter_id"])
    return one(letter, "dead letter", params["letter_id"])


async def replay_dead_letter_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """Publish a dead letter's original message again, to the topic it was delivered from."""
    done = await replay_dead_letter(deps, principal, params["letter_id"], action=action_of(request))
    return JSONResponse(
        {"replayed": done.letter_id, "topic": done.topic, "message_id": done.message_id}, 202
    )


def approval_view(approval: ApprovalRecord) -> dict[str, Any]:
    return approval.model_dump(mode="json")


async def decide_approval_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """Approve or reject one gated call: 200 with the approval; 409 with its final state if it
    was already decided or expired; 403 for a principal who may not decide it."""
    body = DecideApprovalRequest.model_validate(await _json_body(request))
    try:
        approval = await Approvals(deps).decide(
            params["run_id"],
            params["approval_id"],
            principal=principal.id,
            verdict=body.decision,
            reason=body.reason,
            arguments=body.arguments,
            remember=body.remember,
        )
    except ApprovalError as exc:
        extra = {"approval": approval_view(exc.approval)} if exc.approval is not None else {}
        return error(exc.status, str(exc), **extra)
    return JSONResponse(approval_view(approval))


async def get_approval_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    approval = await deps.runs.get_approval(params["run_id"], params["approval_id"])
    return one(approval, "approval", params["approval_id"])


async def run_approvals_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    found = await deps.runs.list_approvals(run_id=run.run_id)
    return JSONResponse({"approvals": [approval_view(a) for a in found]})


APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")


async def list_approvals_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """The inbox: approvals across runs, ``?status=pending`` for those waiting for someone."""
    status = request.query_params.get("status")
    if status is not None and status not in APPROVAL_STATUSES:
        return error(400, f"status must be one of {list(APPROVAL_STATUSES)}")
    try:
        limit = min(max(int(request.query_params.get("limit", "100")), 1), 500)
    except ValueError:
        return error(400, "limit must be an integer")
    found = await deps.runs.list_approvals(status=status, limit=limit)  # type: ignore[arg-type]
    return JSONResponse({"approvals": [approval_view(a) for a in found]})


async def health_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    return JSONResponse({"status": "ok", "workspace": deps.settings.workspace})


async def openapi_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    return JSONResponse(api_document())


async def graphql_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``/graphql`` reached functions-framework's HTTP app: only the ASGI app serves it."""
    return error(
        404,
        "GraphQL is served by services/api/main.py:asgi_app (runtime/app.py), not by "
        "functions-framework's HTTP app alone",
    )


_RUN_STATUS = Param("status", {"type": "string", "enum": [s.value for s in RunStatus]})
_LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 500})
_AFTER = Param("after", description="resume after this event id")
_LAST_EVENT_ID = Param("Last-Event-ID", where="header", description="as ?after= (SSE resume)")
_SSE = "text/event-stream"
_TREE = Param(
    "tree",
    {"type": "string", "enum": ["1", "true"]},
    description="with the events of the runs below it (calls, handoffs); a stream cannot resume",
)

# fmt: off
# The api, one line per operation; the router matches them in this order and /openapi.json lists
# them in it. Public routes answer without a token; every other route authenticates first.
ROUTES: list[Route] = [
    Route("GET", "/healthz", health_route, "Liveness and the workspace", (200,), public=True),
    Route("GET", "/openapi.json", openapi_route, "This document", (200,), public=True),
    Route("GET", "/docs", docs_route, "Swagger UI on this document", (200,), content="text/html",
          public=True),
    Route("GET", "/docs/{file}", docs_route, "Swagger UI's files", (200, 404), content=None,
          public=True, path_schemas={"file": {"type": "string", "enum": list(DOCS_FILES)}}),
    Route("GET", "/ui", ui_route, "The run viewer", (200,), content="text/html", public=True),
    Route("GET", "/ui/{file}", ui_route, "The run viewer's files", (200, 404), content=None,
          public=True, path_schemas={"file": {"type": "string", "enum": list(UI_FILES)}}),
    Route("POST", "/runs", start_run_route, "Start a run (202 with its id)",
          (202, 400, 401, 403, 404, 409, 422), body=StartRunRequest),
    Route("GET", "/runs", list_runs_route, "List runs", (200, 400, 401),
          params=(Param("agent"), _RUN_STATUS, _LIMIT)),
    Route("GET", "/runs/{run_id}", get_run_route,
          "A run, its handoff chain and dead letters", (200, 401, 404)),
    Route("POST", "/runs/{run_id}/cancel", cancel_run_route, "Cancel a run", (200, 401, 404)),
    Route("GET", "/runs/{run_id}/tree", tree_route,
          "The run and the runs below it (calls and handoffs)", (200, 401, 404)),
    Route("GET", "/runs/{run_id}/messages", messages_route,
          "A run's transcript and model calls", (200, 401, 404)),
    Route("GET", "/runs/{run_id}/events", events_route,
          "A run's stored events (Accept: text/event-stream streams them)", (200, 401, 404),
          params=(_AFTER, _TREE)),
    Route("GET", "/runs/{run_id}/events/stream", event_stream_route,
          "Server-Sent Events of the run, from Last-Event-ID or ?after=", (200, 401, 404),
          params=(_AFTER, _LAST_EVENT_ID, _TREE), content=_SSE, query_token=True),
    Route("GET", "/runs/{run_id}/events/ws", websocket_required_route,
          "WebSocket of the run's stored events (JSON per message), from ?after=; auth by "
          "Authorization or ?token=; plain HTTP gets 426", (101, 401, 404, 426),
          params=(_AFTER, TOKEN_PARAM), content=None),
    Route("GET", "/runs/{run_id}/approvals", run_approvals_route, "A run's approvals",
          (200, 401, 404)),
    Route("GET", "/runs/{run_id}/approvals/{approval_id}", get_approval_route, "One approval",
          (200, 401, 404)),
    Route("POST", "/runs/{run_id}/approvals/{approval_id}", decide_approval_route,
          "Approve or reject a gated tool call (409: already decided)",
          (200, 400, 401, 403, 404, 409, 422), body=DecideApprovalRequest),
    Route("GET", "/approvals", list_approvals_route, "Approvals across runs (the inbox)",
          (200, 400, 401),
          params=(Param("status", {"type": "string", "enum": list(APPROVAL_STATUSES)}), _LIMIT)),
    Route("GET", "/agent-stream/{run_id}", agent_stream_route,
          "Seed 004's stream: unnamed SSE events of the run's events as AgentStreamEvent JSON "
          "(eventType, content, ...); a WebSocket on the same path", (200, 401, 404),
          params=(_AFTER, _LAST_EVENT_ID), content=_SSE, query_token=True),
    Route("POST", "/graphql", graphql_route,
          "GraphQL (agents, runs, messages, events, approvals; startRun, cancelRun, "
          "decideApproval); subscriptions over graphql-transport-ws on the same path",
          (200, 400, 401, 404), body=GraphQLRequest),
    Route("POST", "/agents", put_agent_route, "Register an agent", (201, 400, 401, 422),
          body=AgentDefinition),
    Route("GET", "/agents", list_agents_route, "List agents", (200, 401)),
    Route("GET", "/agents/{agent_id}", get_agent_route, "One agent", (200, 401, 404)),
    Route("GET", "/handoffs/{offer_id}", get_handoff_route, "A handoff offer", (200, 401, 404)),
    Route("GET", "/conversations/{conversation_id}", get_conversation_route,
          "A conversation: its runs, its holder and its messages", (200, 401, 404)),
    Route("GET", "/dead-letters", list_dead_letters_route, "List dead letters", (200, 401)),
    Route("GET", "/dead-letters/{letter_id}", get_dead_letter_route, "One dead letter",
          (200, 401, 404)),
    Route("POST", "/dead-letters/{letter_id}/replay", replay_dead_letter_route,
          "Publish a dead letter's message again", (202, 401, 404, 409)),
    *AGENT_HISTORY_ROUTES,
    *FUNCTION_ROUTES,
    *TRANSITION_ROUTES,
    *WORKFLOW_ROUTES,
]
# fmt: on
ROUTER = Router(ROUTES)


@cache
def api_document() -> dict[str, Any]:
    """The OpenAPI document of :data:`ROUTES`, made once per process."""
    return openapi_document(ROUTES)


async def handle_api(request: Request, deps: Deps) -> Response:
    """Route, authenticate unless public, and map errors: 400/422 list the problems, a use case's
    refusal is its status, 401/403 are audited."""
    path = request.url.path.rstrip("/") or "/"
    found = ROUTER.resolve(request.method, path)
    route = found.route
    if route is not None and route.public:
        if any(not valid_id(value) for value in found.params.values()):
            return error(404, f"no such resource: {path}")
        return await route.handler(request, deps, found.params, Principal("anonymous", "public"))
    try:
        principal = await authenticate(
            request,
            deps.settings,
            query_token=request.method == "GET" and route is not None and route.query_token,
        )
    except AuthError as exc:
        await audit(deps, action_of(request), None, "unauthenticated", exc.status, None, exc.reason)
        return error(exc.status, exc.reason)
    if route is None:
        if found.allowed:
            allowed = ", ".join(found.allowed)
            return error(405, f"method {request.method} not allowed; use {allowed}")
        return error(404, f"no route for {path}")
    if any(not valid_id(value) for value in found.params.values()):
        return error(404, f"no such resource: {path}")
    try:
        return await route.handler(request, deps, found.params, principal)
    except ValidationError as exc:
        problems = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()
        ]
        return error(422, "invalid request", problems=problems)
    except PermanentMessageError as exc:
        return error(400, str(exc))
    except Refused as exc:
        return error(exc.status, str(exc), **exc.extra)
