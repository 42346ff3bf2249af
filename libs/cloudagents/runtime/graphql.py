"""GraphQL at ``/graphql`` (strawberry): the api's reads and run control, and seed 004's
``subscription agentExecutionStream(executionId)`` over ``graphql-transport-ws``.

Callers are the api's principals (``runtime/auth.py``): HTTP requests carry the bearer header;
a WebSocket's ``connection_init`` payload carries ``{"Authorization": "Bearer ..."}`` or
``{"token": "..."}`` (or the handshake's own header / ``?token=``), and a connection that does
not authenticate is closed with 4403 before any operation runs. A subscription is one subscriber
of the process's ``EventHub``; the generator leaves the hub in ``finally`` whether the client
completes the operation, disconnects or the run ends (strawberry cancels the operation's task).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.scalars import JSON
from strawberry.types import Info

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalRecord
from cloudagents.domain.events import RunEvent
from cloudagents.domain.runs import RunRecord, RunStatus
from cloudagents.graphs.documents import WorkflowRunDocument
from cloudagents.graphs.events import WorkflowEvent
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.runtime.approvals import ApprovalError, Approvals
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import AuthError, Principal, authenticate
from cloudagents.runtime.commands import Refused, StartRunRequest, cancel_run, start_run_for
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.hub import hub_for, workflow_hub
from cloudagents.runtime.routing import valid_id
from cloudagents.runtime.streaming import agent_stream_json, as_http_request
from cloudagents.runtime.workflow_commands import (
    RUN_STATUSES,
    WorkflowCommandError,
    cancel_workflow_run,
    describe_workflow_run,
    workflow_run_view,
    workspace_run,
)


@dataclass
class Context:
    """What a resolver sees: the process's dependencies and the authenticated caller."""

    deps: Deps
    request: Request | WebSocket
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None


_PRINCIPAL = "cloudagents_principal"


def _principal(info: Info[Context, None]) -> Principal:
    """The caller; every connection authenticated before a resolver runs, so this is a check
    that no path bypassed it."""
    if info.context.principal is None:
        raise PermissionError("not authenticated")
    return info.context.principal


@strawberry.type
class Agent:
    """A registered agent."""

    id: str
    name: str
    description: str
    tools: list[str]
    capabilities: list[str]
    model: str

    @staticmethod
    def of(definition: AgentDefinition) -> Agent:
        return Agent(
            id=definition.id,
            name=definition.name,
            description=definition.description,
            tools=list(definition.tools),
            capabilities=list(definition.capabilities),
            model=f"{definition.model.provider}/{definition.model.name}",
        )


@strawberry.type
class Run:
    """A run, as ``GET /runs/{id}`` shows it."""

    run_id: str
    agent_id: str
    status: str
    seq: int
    exit: str | None
    total_tokens: int | None
    principal: str | None
    parent_run_id: str | None
    child_run_ids: list[str]
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def of(run: RunRecord) -> Run:
        return Run(
            run_id=run.run_id,
            agent_id=run.agent_id,
            status=run.status.value,
            seq=run.seq,
            exit=run.result.exit.value if run.result else None,
            total_tokens=run.result.total_tokens if run.result else None,
            principal=run.principal,
            parent_run_id=run.parent_run_id,
            child_run_ids=list(run.child_run_ids),
            created_at=run.created_at,
            updated_at=run.updated_at,
        )


@strawberry.type
class TranscriptMessage:
    """One message of a run's transcript."""

    role: str
    content: str | None
    name: str | None
    tool_call_id: str | None
    tool_calls: JSON


@strawberry.type
class AgentStreamEvent:
    """Seed 004's stream event: the fields its clients select, plus the event's id."""

    id: str
    execution_id: str
    event_type: str
    content: str | None
    status: str | None
    tool_name: str | None
    error: str | None
    timestamp: datetime
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    @staticmethod
    def of(event: RunEvent) -> AgentStreamEvent:
        view = agent_stream_json(event)
        usage = view.get("usage") or {}
        return AgentStreamEvent(
            id=event.id,
            execution_id=event.run_id,
            event_type=event.type,
            content=view["content"],
            status=view["status"],
            tool_name=view["toolName"],
            error=view["error"],
            timestamp=event.timestamp,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
        )


@strawberry.type
class StartedRun:
    """What ``startRun`` did: the run's id, and whether this call created it."""

    run_id: str
    created: bool


@strawberry.type
class Approval:
    """A tool call waiting for (or decided by) a person."""

    run_id: str
    approval_id: str
    agent_id: str
    tool: str
    arguments: JSON
    edited_arguments: JSON | None
    risk: str
    reason_required: str
    status: str
    requested_at: datetime
    expires_at: datetime
    on_timeout: str
    approvers: list[str]
    quorum: int
    decided_by: list[str]
    decision_reason: str

    @staticmethod
    def of(approval: ApprovalRecord) -> Approval:
        return Approval(
            run_id=approval.run_id,
            approval_id=approval.approval_id,
            agent_id=approval.agent_id,
            tool=approval.tool,
            arguments=cast(JSON, approval.arguments),
            edited_arguments=cast(JSON, approval.edited_arguments),
            risk=approval.risk,
            reason_required=approval.reason_required,
            status=approval.status,
            requested_at=approval.requested_at,
            expires_at=approval.expires_at,
            on_timeout=approval.on_timeout,
            approvers=list(approval.approvers),
            quorum=approval.quorum,
            decided_by=list(approval.decided_by),
            decision_reason=approval.decision_reason,
        )


@strawberry.type
class WorkflowRun:
    """A graph workflow run, as ``GET /workflow-runs/{id}`` shows it (``pending``: the open
    superstep's tasks, each with ``done`` and an agent node's ``agent_runs``)."""

    workflow_id: str
    graph_name: str
    graph_hash: str
    status: str
    step: int
    step_limit: int
    priority: str
    forked_from: str | None
    resumes: int
    pending: JSON
    state: JSON
    error: str | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def of(view: dict[str, Any]) -> WorkflowRun:
        fields = {name: view[name] for name in WorkflowRun.__annotations__}
        fields["created_at"] = datetime.fromisoformat(view["created_at"])
        fields["updated_at"] = datetime.fromisoformat(view["updated_at"])
        return WorkflowRun(**fields)


@strawberry.type
class WorkflowStreamEvent:
    """A workflow run's event (``graphs/events.py``): the common fields, and the rest of the
    event as ``data``."""

    id: str
    workflow_id: str
    step: int
    event_type: str
    timestamp: datetime
    task_id: str | None
    node: str | None
    data: JSON

    @staticmethod
    def of(event: WorkflowEvent) -> WorkflowStreamEvent:
        data = event.model_dump(mode="json")
        return WorkflowStreamEvent(
            id=event.id,
            workflow_id=event.workflow_id,
            step=event.step,
            event_type=event.type,
            timestamp=event.timestamp,
            task_id=data.get("task_id"),
            node=data.get("node"),
            data=cast(JSON, data),
        )


def _workflows(info: Info[Context, None]) -> WorkflowStore:
    store = info.context.deps.workflows
    if store is None:
        raise ValueError("this api has no workflow store")
    return store


async def _workflow_run(info: Info[Context, None], workflow_id: str) -> WorkflowRunDocument:
    run = await workspace_run(info.context.deps, workflow_id) if valid_id(workflow_id) else None
    if run is None:
        raise ValueError(f"unknown workflow run {workflow_id!r}")
    return run


@strawberry.type
class Query:
    @strawberry.field
    async def agents(self, info: Info[Context, None]) -> list[Agent]:
        _principal(info)
        return [Agent.of(a) for a in await info.context.deps.agents.list_agents()]

    @strawberry.field
    async def agent(self, info: Info[Context, None], id: str) -> Agent | None:
        _principal(info)
        found = await info.context.deps.agents.get_agent(id)
        return Agent.of(found) if found else None

    @strawberry.field
    async def runs(
        self,
        info: Info[Context, None],
        agent_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        _principal(info)
        wanted = RunStatus(status) if status else None
        found = await info.context.deps.runs.list_runs(
            agent_id=agent_id, status=wanted, limit=min(max(limit, 1), 500)
        )
        return [Run.of(r) for r in found]

    @strawberry.field
    async def run(self, info: Info[Context, None], run_id: str) -> Run | None:
        _principal(info)
        found = await info.context.deps.runs.get_run(run_id)
        return Run.of(found) if found else None

    @strawberry.field
    async def messages(self, info: Info[Context, None], run_id: str) -> list[TranscriptMessage]:
        _principal(info)
        return [
            TranscriptMessage(
                role=m.role,
                content=m.content,
                name=m.name,
                tool_call_id=m.tool_call_id,
                tool_calls=cast(JSON, [c.model_dump(mode="json") for c in m.tool_calls]),
            )
            for m in await info.context.deps.runs.messages(run_id)
        ]

    @strawberry.field
    async def events(
        self, info: Info[Context, None], run_id: str, after: str | None = None
    ) -> list[AgentStreamEvent]:
        _principal(info)
        stored = await info.context.deps.runs.events(run_id, after=after)
        return [AgentStreamEvent.of(e) for e in stored]

    @strawberry.field
    async def approvals(
        self,
        info: Info[Context, None],
        status: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        """Approvals across runs (``status: "pending"`` is the inbox), or one run's."""
        _principal(info)
        if status is not None and status not in ("pending", "approved", "rejected", "expired"):
            raise ValueError("status is one of pending, approved, rejected, expired")
        found = await info.context.deps.runs.list_approvals(
            run_id=run_id,
            status=status,  # type: ignore[arg-type]
            limit=min(max(limit, 1), 500),
        )
        return [Approval.of(a) for a in found]

    @strawberry.field
    async def workflow_runs(
        self, info: Info[Context, None], status: str | None = None, limit: int = 50
    ) -> list[WorkflowRun]:
        """Workflow runs of this workspace, newest first (``status``: running, completed,
        failed, cancelled, step_limit)."""
        _principal(info)
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"status is one of {', '.join(RUN_STATUSES)}")
        found = await _workflows(info).list_runs(
            info.context.deps.settings.workspace, status, min(max(limit, 1), 500)
        )
        return [WorkflowRun.of(workflow_run_view(r)) for r in found]

    @strawberry.field
    async def workflow_run(self, info: Info[Context, None], workflow_id: str) -> WorkflowRun | None:
        _principal(info)
        run = await workspace_run(info.context.deps, workflow_id) if valid_id(workflow_id) else None
        if run is None:
            return None
        return WorkflowRun.of(await describe_workflow_run(info.context.deps, run))

    @strawberry.field
    async def workflow_events(
        self, info: Info[Context, None], workflow_id: str, after: str | None = None
    ) -> list[WorkflowStreamEvent]:
        _principal(info)
        await _workflow_run(info, workflow_id)
        stored = await _workflows(info).events(workflow_id, after=after)
        return [WorkflowStreamEvent.of(e) for e in stored]


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def start_run(
        self,
        info: Info[Context, None],
        agent_id: str,
        message: str,
        variables: JSON | None = None,
        run_id: str | None = None,
    ) -> StartedRun:
        principal = _principal(info)
        body = StartRunRequest.model_validate(
            {"agent_id": agent_id, "message": message, "variables": variables or {}}
            | ({"run_id": run_id} if run_id else {})
        )
        request = info.context.request
        if isinstance(request, WebSocket):  # a mutation sent over graphql-transport-ws
            request = as_http_request(request)
        try:
            started = await start_run_for(
                info.context.deps, principal, body, action=action_of(request)
            )
        except Refused as exc:
            raise ValueError(str(exc)) from exc
        return StartedRun(run_id=started.run_id, created=started.created)

    @strawberry.mutation
    async def decide_approval(
        self,
        info: Info[Context, None],
        run_id: str,
        approval_id: str,
        decision: str,
        reason: str = "",
        arguments: JSON | None = None,
    ) -> Approval:
        """Approve or reject a gated call, as ``POST /runs/{id}/approvals/{approval_id}``."""
        principal = _principal(info)
        if decision not in ("approve", "reject"):
            raise ValueError("decision is approve or reject")
        if arguments is not None and not isinstance(arguments, dict):
            raise ValueError("arguments is an object")
        try:
            decided = await Approvals(info.context.deps).decide(
                run_id,
                approval_id,
                principal=principal.id,
                verdict=decision,  # type: ignore[arg-type]
                reason=reason,
                arguments=cast(dict[str, Any] | None, arguments),
            )
        except ApprovalError as exc:
            raise ValueError(f"{exc.status}: {exc}") from exc
        return Approval.of(decided)

    @strawberry.mutation
    async def cancel_run(self, info: Info[Context, None], run_id: str) -> Run | None:
        _principal(info)
        cancelled = await cancel_run(info.context.deps, run_id)
        return Run.of(cancelled) if cancelled else None

    @strawberry.mutation
    async def cancel_workflow_run(self, info: Info[Context, None], workflow_id: str) -> WorkflowRun:
        """Cancel a running workflow run and its agent nodes' child runs, as
        ``POST /workflow-runs/{id}/cancel``."""
        principal = _principal(info)
        request = info.context.request
        if isinstance(request, WebSocket):
            request = as_http_request(request)
        try:
            ended, children = await cancel_workflow_run(info.context.deps, workflow_id)
        except WorkflowCommandError as exc:
            raise ValueError(f"{exc.status}: {exc}") from exc
        detail = "workflow run cancelled" + (f" with its child runs {children}" if children else "")
        await audit(
            info.context.deps, action_of(request), principal, "allowed", 200, workflow_id, detail
        )
        return WorkflowRun.of(workflow_run_view(ended))


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def agent_execution_stream(
        self, info: Info[Context, None], execution_id: str, after: str | None = None
    ) -> AsyncGenerator[AgentStreamEvent, None]:
        _principal(info)
        deps = info.context.deps
        if await deps.runs.get_run(execution_id) is None:
            raise ValueError(f"unknown run {execution_id!r}")
        subscription = hub_for(deps).subscribe(execution_id, after)
        try:
            while (event := await subscription.next_event()) is not None:
                yield AgentStreamEvent.of(event)
            if subscription.close_reason:
                raise ValueError(subscription.close_reason)
        finally:
            subscription.close()

    @strawberry.subscription
    async def workflow_execution_stream(
        self, info: Info[Context, None], workflow_id: str, after: str | None = None
    ) -> AsyncGenerator[WorkflowStreamEvent, None]:
        """A workflow run's events from ``after``, through ``workflow_ended``: this process's one
        feed of the run (``hub.WorkflowHub``), as the SSE and WebSocket streams serve it."""
        _principal(info)
        await _workflow_run(info, workflow_id)
        events = workflow_hub(_workflows(info)).subscribe(workflow_id, after)
        try:
            async for event in events:
                yield WorkflowStreamEvent.of(event)
        finally:
            await events.aclose()  # type: ignore[attr-defined]


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)


def _with_authorization(websocket: WebSocket, params: dict[str, Any]) -> Request:
    """The handshake as an HTTP request carrying the ``connection_init`` credentials."""
    request = as_http_request(websocket)
    header = params.get("Authorization") or params.get("authorization")
    token = params.get("token")
    value = header if isinstance(header, str) else f"Bearer {token}" if token else None
    if value is None:
        return request
    scope = dict(request.scope)
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
    scope["headers"] = [*headers, (b"authorization", value.encode("latin-1"))]
    return Request(scope)


class CloudAgentsGraphQL(GraphQL[Context, None]):
    """strawberry's ASGI app with the api's dependencies and authentication."""

    def __init__(self, deps_of: Callable[[], Awaitable[Deps]]) -> None:
        super().__init__(schema, graphql_ide=None)
        self.deps_of = deps_of

    async def _deps(self) -> Deps:
        return await self.deps_of()

    def parse_json(self, data: str | bytes) -> Any:
        """A JSON body that is not an operation (``null``, ``1``, ``"x"``, ``[1]``) is a 400:
        strawberry reads fields off whatever the body decodes to, which was a 500."""
        decoded = super().parse_json(data)
        items = decoded if isinstance(decoded, list) else [decoded]
        if not all(isinstance(item, dict) for item in items):
            raise HTTPException(400, "the body must be a GraphQL operation: a JSON object")
        return decoded

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """HTTP requests authenticate first, as every api route does: 401 without a caller."""
        if scope["type"] == "http":
            deps = await self._deps()
            request = Request(scope, receive)
            try:
                principal = await authenticate(request, deps.settings)
            except AuthError as exc:
                await audit(
                    deps, action_of(request), None, "unauthenticated", exc.status, None, exc.reason
                )
                await JSONResponse({"error": exc.reason}, status_code=exc.status)(
                    scope, receive, send
                )
                return
            scope.setdefault("state", {})[_PRINCIPAL] = principal
        try:
            await super().__call__(scope, receive, send)
        except UnicodeDecodeError as exc:  # strawberry decodes the body itself: a 4xx, not a 500
            if scope["type"] != "http":
                raise
            await JSONResponse({"error": f"the body is not UTF-8: {exc.reason}"}, status_code=400)(
                scope, receive, send
            )

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        principal = request.scope.get("state", {}).get(_PRINCIPAL)
        return Context(deps=await self._deps(), request=request, principal=principal)

    async def on_ws_connect(self, context: Context) -> None:
        assert isinstance(context.request, WebSocket)
        request = _with_authorization(context.request, context.connection_params or {})
        try:
            context.principal = await authenticate(request, context.deps.settings)
        except AuthError as exc:
            await audit(
                context.deps,
                action_of(request),
                None,
                "unauthenticated",
                exc.status,
                None,
                exc.reason,
            )
            raise ConnectionRejectionError({"reason": exc.reason}) from exc


def graphql_app(deps_of: Callable[[], Awaitable[Deps]]) -> CloudAgentsGraphQL:
    """The ASGI app ``build_api_app`` mounts at ``/graphql``."""
    return CloudAgentsGraphQL(deps_of)
