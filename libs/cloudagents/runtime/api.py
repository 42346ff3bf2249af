"""The HTTP api: start, read, list and cancel runs; register and list agents; decide approvals;
dead letters.

Starting a run creates its document and publishes an ``IntentionMessage`` to the workspace topic,
exactly what a caller publishing the intent directly would do; the executor takes it from there.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.domain.agents import AGENT_ID_PATTERN, AgentDefinition
from cloudagents.domain.approvals import ALWAYS, NEVER, ApprovalRecord
from cloudagents.domain.conversations import CONVERSATION_ID_PATTERN, ConversationBusy
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import AuditRecord, OutboxMessage, RunRecord, RunStatus
from cloudagents.runtime.approvals import ApprovalError, Approvals
from cloudagents.runtime.auth import AuthError, Principal, authenticate, may_start
from cloudagents.runtime.broker import HandoffBroker
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import start_run
from cloudagents.runtime.openapi import openapi_document
from cloudagents.runtime.streaming import (
    agent_stream_route,
    event_stream_route,
    wants_event_stream,
    websocket_required_route,
)
from cloudagents.runtime.trees import cancel_tree, run_tree
from cloudagents.runtime.ui import is_ui_path, ui_response
from cloudagents.telemetry import tracer
from cloudagents.tools import get_approval_predicate

log = logging.getLogger(__name__)
Handler = Callable[[Request, Deps, dict[str, str], Principal], Awaitable[Response]]


class DecideApprovalRequest(BaseModel):
    """``POST /runs/{run_id}/approvals/{approval_id}`` body."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=2000)
    arguments: dict[str, JsonValue] | None = Field(
        default=None, description="edited arguments (approve only), checked against the tool"
    )
    remember: Literal["run", "agent"] | None = None


class StartRunRequest(BaseModel):
    """``POST /runs`` body."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str = Field(min_length=1, max_length=128, pattern=AGENT_ID_PATTERN)
    message: str = Field(max_length=200_000)
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    conversation_id: str | None = Field(
        default=None,
        pattern=CONVERSATION_ID_PATTERN,
        description="continue this conversation: one run at a time (409 while one runs)",
    )


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
    status, data = await launch_run(deps, request, principal, body)
    return JSONResponse(data, status_code=status)


async def launch_run(
    deps: Deps, request: Request, principal: Principal, body: StartRunRequest
) -> tuple[int, dict[str, Any]]:
    """Start a run for ``principal`` (``POST /runs`` and GraphQL's ``startRun``): the HTTP
    status and the JSON body, ``{"error": ...}`` when refused."""
    agent = await deps.agents.get_agent(body.agent_id)
    if agent is None:
        return 404, {"error": f"unknown agent {body.agent_id!r}"}
    if not may_start(principal, agent):
        await audit(deps, request, principal, "denied", 403, agent.id, "not in allowed_callers")
        return 403, {"error": f"{principal.id} may not start runs of agent {agent.id!r}"}
    run_id = body.run_id or f"run-{uuid.uuid4().hex}"
    with tracer.start_as_current_span("agent.run.start", attributes={"cloudagents.run_id": run_id}):
        try:
            created = await start_run(
                deps,
                run_id=run_id,
                agent=agent,
                message=body.message,
                variables=dict(body.variables),
                source="api",
                principal=principal.id,
                conversation_id=body.conversation_id,
            )
        except ConversationBusy as busy:
            return 409, {"error": str(busy), "active_run_id": busy.run_id}
        intent = IntentionMessage.for_run(
            run_id=run_id,
            agent_id=agent.id,
            message=body.message,
            source_agent="api",
            variables=body.variables,
            conversation_id=body.conversation_id,
        )
        await deps.publish([OutboxMessage(topic="intents", data=intent.model_dump(mode="json"))])
    await audit(deps, request, principal, "allowed", 202, run_id, f"agent {agent.id}")
    return 202, {"run_id": run_id, "created": created, "status_url": f"/runs/{run_id}"}


async def get_run_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return error(404, f"unknown run {params['run_id']!r}")
    view = run_view(run)
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
    run = await cancel_tree(deps, params["run_id"], "cancelled by request")
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
    events = await deps.runs.events(run.run_id, after=request.query_params.get("after"))
    return JSONResponse({"events": [e.model_dump(mode="json") for e in events]})


async def put_agent_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    definition = AgentDefinition.model_validate(await _json_body(request))
    if problem := unknown_approval_rule(definition):
        return error(422, "invalid request", problems=[problem])
    await deps.agents.put_agent(definition)
    await audit(deps, request, principal, "allowed", 201, definition.id, "agent registered")
    await HandoffBroker(deps).offer_open_offers_to(definition)
    return JSONResponse(definition.model_dump(mode="json"), status_code=201)


def unknown_approval_rule(definition: AgentDefinition) -> dict[str, str] | None:
    """A policy rule naming a predicate no tool module registered (it would ask every time)."""
    policy = definition.approval
    for tool_name, rule in (policy.tools if policy is not None else {}).items():
        if rule not in (ALWAYS, NEVER) and get_approval_predicate(rule) is None:
            return {
                "loc": f"approval.tools.{tool_name}",
                "msg": f"{rule!r} is not always, never or a registered approval predicate",
            }
    return None


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
    letter = await deps.dead_letters.get_dead_letter(params["letter_id"])
    if letter is None:
        return error(404, f"unknown dead letter {params['letter_id']!r}")
    subscription = letter.source.rsplit("/", 1)[-1]
    topic = next((s.topic for s in deps.topology.subscriptions if s.name == subscription), None)
    if topic is None:
        return error(409, f"cannot replay: {letter.source!r} is not a known subscription")
    data = base64.b64decode(letter.data)
    attributes = {**letter.attributes, "cloudagents-replay-of": letter.id}
    message_id = await deps.bus.publish(topic, data, attributes)
    await deps.dead_letters.mark_replayed(letter.id)
    await audit(deps, request, principal, "allowed", 202, letter.id, f"replayed to {topic}")
    return JSONResponse({"replayed": letter.id, "topic": topic, "message_id": message_id}, 202)


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


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/healthz$"), health_route),
    ("POST", re.compile(r"^/runs$"), start_run_route),
    ("GET", re.compile(r"^/runs$"), list_runs_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)$"), get_run_route),
    ("POST", re.compile(r"^/runs/(?P<run_id>[^/]+)/cancel$"), cancel_run_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/tree$"), tree_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/messages$"), messages_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/events$"), events_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/events/stream$"), event_stream_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/events/ws$"), websocket_required_route),
    ("GET", re.compile(r"^/runs/(?P<run_id>[^/]+)/approvals$"), run_approvals_route),
    (
        "GET",
        re.compile(r"^/runs/(?P<run_id>[^/]+)/approvals/(?P<approval_id>[^/]+)$"),
        get_approval_route,
    ),
    (
        "POST",
        re.compile(r"^/runs/(?P<run_id>[^/]+)/approvals/(?P<approval_id>[^/]+)$"),
        decide_approval_route,
    ),
    ("GET", re.compile(r"^/approvals$"), list_approvals_route),
    ("GET", re.compile(r"^/agent-stream/(?P<run_id>[^/]+)$"), agent_stream_route),
    ("POST", re.compile(r"^/agents$"), put_agent_route),
    ("GET", re.compile(r"^/agents$"), list_agents_route),
    ("GET", re.compile(r"^/agents/(?P<agent_id>[^/]+)$"), get_agent_route),
    ("GET", re.compile(r"^/handoffs/(?P<offer_id>[^/]+)$"), get_handoff_route),
    (
        "GET",
        re.compile(r"^/conversations/(?P<conversation_id>[^/]+)$"),
        get_conversation_route,
    ),
    ("GET", re.compile(r"^/dead-letters$"), list_dead_letters_route),
    ("GET", re.compile(r"^/dead-letters/(?P<letter_id>[^/]+)$"), get_dead_letter_route),
    ("POST", re.compile(r"^/dead-letters/(?P<letter_id>[^/]+)/replay$"), replay_dead_letter_route),
]
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})
# The GET stream routes that accept ``?token=`` (EventSource cannot set headers).
_SSE_TOKEN_PATHS = re.compile(r"^/(?:runs/[^/]+/events/stream|agent-stream/[^/]+)$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,300}$")


def valid_id(value: str) -> bool:
    """A usable document id: Firestore refuses '.', '..' and '__x__' names."""
    return (
        bool(_ID.match(value))
        and value not in (".", "..")
        and not (value.startswith("__") and value.endswith("__"))
    )


async def audit(
    deps: Deps,
    request: Request,
    principal: Principal | None,
    outcome: Literal["allowed", "denied", "unauthenticated"],
    status: int,
    target: str | None,
    reason: str,
) -> None:
    await deps.audit.record_audit(
        AuditRecord(
            id=f"{deps.clock().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}",
            action=f"{request.method} {request.url.path}",
            outcome=outcome,
            status=status,
            principal=principal.id if principal else None,
            target=target,
            reason=reason,
        )
    )


async def handle_api(request: Request, deps: Deps) -> Response:
    """Authenticate, route, and map errors: 400/422 list the problems, 401/403 are audited."""
    path = request.url.path.rstrip("/") or "/"
    if is_ui_path(path) and request.method in ("GET", "HEAD"):
        return ui_response(path)  # static files; the page's data comes through the routes below
    if path in PUBLIC_PATHS:
        if path == "/openapi.json":
            return JSONResponse(openapi_document())
        return await health_route(request, deps, {}, Principal("anonymous", "public"))
    try:
        principal = await authenticate(
            request,
            deps.settings,
            query_token=request.method == "GET" and bool(_SSE_TOKEN_PATHS.match(path)),
        )
    except AuthError as exc:
        await audit(deps, request, None, "unauthenticated", exc.status, None, exc.reason)
        return error(exc.status, exc.reason)
    allowed: list[str] = []
    for method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        allowed.append(method)
        if method == request.method:
            try:
                params = match.groupdict()
                if any(not valid_id(value) for value in params.values()):
                    return error(404, f"no such resource: {path}")
                return await handler(request, deps, params, principal)
            except ValidationError as exc:
                problems = [
                    {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                    for e in exc.errors()
                ]
                return error(422, "invalid request", problems=problems)
            except PermanentMessageError as exc:
                return error(400, str(exc))
    if allowed:
        return error(405, f"method {request.method} not allowed; use {', '.join(allowed)}")
    return error(404, f"no route for {path}")
