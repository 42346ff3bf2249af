"""A run's events, live: Server-Sent Events and WebSockets through the api, and seed 004's
``/agent-stream/{id}``; all served from this process's ``EventHub`` (``runtime/hub.py``), which
reads each watched run once however many streams watch it.

Event ids sort in the order events happen, so a client that reconnects with the last id it saw
(``Last-Event-ID``, ``?after=``) gets exactly what it missed: no gaps, no duplicates
(``runtime/follow.py``). A stream ends with the run's ``completed`` or ``failed`` event; a run
finished without one (cancelled) ends with a ``failed`` event made from its result.

SSE: ``GET /runs/{id}/events`` with ``Accept: text/event-stream``, or ``GET
/runs/{id}/events/stream``, served by ``handle_api`` (same authentication as every route).
``GET /agent-stream/{id}`` is the same stream as seed 004's ``EventSource`` expects it:
unnamed ``data:`` events carrying the seed's JSON (``eventType``, ``content``, ...).

Workflow runs (``graphs/events.py``): ``GET /workflow-runs/{id}/events/stream`` (SSE, the
same frames, keep-alives and ``Last-Event-ID`` / ``?after=``) and the WebSocket
``/workflow-runs/{id}/events/ws``, from this process's one feed of the run
(``hub.WorkflowHub``); the stream ends after ``workflow_ended``. A reader resuming
inside a superstep re-reads that superstep's node events (``resume_point``): none missed,
re-sent ones keep their ids.

WebSocket: ``/runs/{id}/events/ws`` (the stored event JSON) and ``/agent-stream/{id}`` (the
seed's JSON), ``?token=`` or ``Authorization``, ``?after=``, one JSON event per text message.
functions-framework's ASGI app routes HTTP only, so the WebSockets (and GraphQL at
``/graphql``) need the app ``runtime/app.py:build_api_app`` makes
(``services/api/main.py:asgi_app``) served by a server with WebSocket support (uvicorn with
``websockets`` or ``wsproto``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloudagents.domain.events import RunEvent
from cloudagents.graphs.events import WorkflowEvent
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.runtime.audit import action_of, audit
from cloudagents.runtime.auth import TOKEN_COOKIE, AuthError, Principal, authenticate
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.follow import RunEventFollower, gap_free_prefix
from cloudagents.runtime.hub import Subscription, hub_for, workflow_hub
from cloudagents.runtime.routing import valid_id
from cloudagents.runtime.trees import run_tree, tree_run_ids

__all__ = ["RunEventFollower", "gap_free_prefix"]

KEEPALIVE_SECONDS = 15.0
RETRY_MILLISECONDS = 1000
TREE_SCAN_SECONDS = 1.0  # how often a tree stream looks for runs that joined the tree
WS_PATH = "/runs/{run_id}/events/ws"
WORKFLOW_WS_PATH = "/workflow-runs/{workflow_id}/events/ws"
AGENT_STREAM_PATH = "/agent-stream/{run_id}"
SLOW_SUBSCRIBER_CLOSE = 1008


# ---- the two JSON shapes ---------------------------------------------------------------------


def event_json(event: RunEvent) -> dict[str, Any]:
    """The stored event, as ``/runs/{id}/events`` lists it."""
    return event.model_dump(mode="json")


def agent_stream_json(event: RunEvent) -> dict[str, Any]:
    """Seed 004's ``AgentStreamEvent`` as its JavaScript client reads it: ``eventType`` for the
    switch, ``content`` (a chunk, or the final response), ``status``, ``toolName``, ``error``,
    ``final_response`` on ``completed``; the GraphQL subscription's fields are the same."""
    view: dict[str, Any] = {
        "id": event.id,
        "executionId": event.run_id,
        "eventType": event.type,
        "sequence": event.seq,
        "timestamp": event.timestamp.isoformat(),
        "content": None,
        "status": None,
        "toolName": None,
        "error": None,
    }
    match event.type:
        case "content_chunk":
            view["content"] = event.chunk
        case "thinking":
            view["status"] = event.status
        case "tool_call":
            view.update(toolName=event.tool_name, arguments=event.arguments)
            view["content"] = json.dumps(event.arguments)
        case "tool_result":
            view.update(toolName=event.tool_name, result=event.result, isError=event.is_error)
            view["content"] = (
                event.result if isinstance(event.result, str) else json.dumps(event.result)
            )
        case "handoff":
            view.update(status=event.status, offerId=event.offer_id)
        case "approval_requested":
            view.update(
                toolName=event.tool_name,
                arguments=event.arguments,
                approvalId=event.approval_id,
                status="waiting_approval",
                expiresAt=event.expires_at.isoformat(),
            )
        case "completed":
            view.update(
                status=event.exit,
                content=event.final_response,
                final_response=event.final_response,
                usage={
                    "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": event.completion_tokens,
                    "total_tokens": event.total_tokens,
                },
            )
        case "failed":
            view.update(status=event.exit, error=event.error)
    return view


# ---- Server-Sent Events --------------------------------------------------------------------


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def sse_frame(event: RunEvent) -> bytes:
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def agent_stream_frame(event: RunEvent) -> bytes:
    """Unnamed events, so ``EventSource.onmessage`` sees them; the id lets it resume."""
    data = json.dumps(agent_stream_json(event), separators=(",", ":"))
    return f"id: {event.id}\ndata: {data}\n\n".encode()


async def sse_stream(
    deps: Deps,
    run_id: str,
    *,
    after: str | None = None,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    frame: Callable[[RunEvent], bytes] = sse_frame,
) -> AsyncIterator[bytes]:
    """The body of an SSE response: the hub's events for the run, keep-alive comments between.
    The subscription is taken when the body starts and left when it ends or is cancelled."""
    subscription = hub_for(deps).subscribe(run_id, after)
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: streaming {run_id}\n\n".encode()
        while True:
            try:
                event = await asyncio.wait_for(subscription.next_event(), keepalive_seconds)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is None:
                if subscription.close_reason:
                    yield f": closed: {subscription.close_reason}\n\n".encode()
                return
            yield frame(event)
    finally:
        subscription.close()


def tree_frame(event: RunEvent) -> bytes:
    """A tree stream's event: its id names its run (``run/event``), its data has ``run_id``."""
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event.run_id}/{event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def tree_sse_stream(
    deps: Deps, run_id: str, *, keepalive_seconds: float = KEEPALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """The events of a run and of every run below it (agent-to-agent calls, handoffs) as they
    happen: one hub subscription per run of the tree, merged; a run that joins the tree is found
    by looking at the tree about once a second. Ends when every run's stream has ended and the
    tree has no run not yet followed. No resume: each run's order is its own."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    tasks: dict[str, asyncio.Task[None]] = {}

    def follow(rid: str) -> None:
        async def pump() -> None:
            try:
                async for chunk in sse_stream(
                    deps, rid, keepalive_seconds=keepalive_seconds, frame=tree_frame
                ):
                    if not chunk.startswith(b"retry:") and not chunk.startswith(b":"):
                        await queue.put(chunk)
            finally:
                await queue.put(None)

        tasks[rid] = asyncio.create_task(pump())

    async def scan() -> None:
        tree = await run_tree(deps, run_id)
        for rid in tree_run_ids(tree) if tree else []:
            if rid not in tasks:
                follow(rid)

    follow(run_id)
    ended = 0
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: streaming the tree of {run_id}\n\n".encode()
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), TREE_SCAN_SECONDS)
            except TimeoutError:
                await scan()
                yield b": keep-alive\n\n"
                continue
            if chunk is None:
                ended += 1
                if ended == len(tasks):
                    await scan()  # a last look: a run that joined since
                    if ended == len(tasks):
                        return
                continue
            yield chunk
    finally:
        for task in tasks.values():
            task.cancel()


def _keepalive(request: Request) -> float:
    try:
        return min(max(float(request.query_params.get("keepalive", KEEPALIVE_SECONDS)), 1.0), 60.0)
    except ValueError:
        return KEEPALIVE_SECONDS


async def _sse_response(
    request: Request, deps: Deps, run_id: str, frame: Callable[[RunEvent], bytes]
) -> Response:
    run = await deps.runs.get_run(run_id)
    if run is None:
        return JSONResponse({"error": f"unknown run {run_id!r}"}, status_code=404)
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    return StreamingResponse(
        sse_stream(
            deps, run.run_id, after=after, keepalive_seconds=_keepalive(request), frame=frame
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def event_stream_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /runs/{id}/events/stream`` (or ``/events`` asking for ``text/event-stream``);
    ``?tree=1``: with the events of the runs below it (``tree_sse_stream``)."""
    if request.query_params.get("tree") in ("1", "true"):
        if await deps.runs.get_run(params["run_id"]) is None:
            return JSONResponse({"error": f"unknown run {params['run_id']!r}"}, status_code=404)
        return StreamingResponse(
            tree_sse_stream(deps, params["run_id"], keepalive_seconds=_keepalive(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _sse_response(request, deps, params["run_id"], sse_frame)


async def agent_stream_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /agent-stream/{id}``: seed 004's ``new EventSource('/agent-stream/{id}')``."""
    return await _sse_response(request, deps, params["run_id"], agent_stream_frame)


async def websocket_required_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """Plain HTTP on the WebSocket path: say where the WebSocket is served."""
    return JSONResponse(
        {
            "error": "this path is a WebSocket endpoint: it needs the api served by "
            "services/api/main.py:asgi_app on a server with WebSocket support "
            "(functions-framework's app routes HTTP only); or use SSE at /events/stream"
        },
        status_code=426,
        headers={"Upgrade": "websocket"},
    )


# ---- workflow runs -------------------------------------------------------------------------


def workflow_sse_frame(event: WorkflowEvent) -> bytes:
    data = event.model_dump_json()
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def workflow_sse_stream(
    store: WorkflowStore,
    workflow_id: str,
    *,
    after: str | None = None,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    """The body of a workflow run's SSE response, keep-alive comments between events: the
    events of this process's one feed of the run (``hub.WorkflowFeed``)."""
    events = workflow_hub(store).subscribe(workflow_id, after).__aiter__()
    yield f"retry: {RETRY_MILLISECONDS}\n: streaming workflow {workflow_id}\n\n".encode()
    pending: asyncio.Task[WorkflowEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keepalive_seconds)
            if not done:
                yield b": keep-alive\n\n"
                continue
            task, pending = pending, None
            try:
                event = task.result()
            except StopAsyncIteration:
                return
            yield workflow_sse_frame(event)
    finally:
        if pending is not None:
            pending.cancel()
        await events.aclose()  # type: ignore[attr-defined]


def workflow_sse_response(request: Request, store: WorkflowStore, workflow_id: str) -> Response:
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    return StreamingResponse(
        workflow_sse_stream(
            store, workflow_id, after=after or None, keepalive_seconds=_keepalive(request)
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def workflow_websocket_events(websocket: WebSocket, deps_of: DepsProvider) -> None:
    """``/workflow-runs/{id}/events/ws``: one event JSON per text message, ``?after=``; close
    codes 4401/4403 (authentication), 4404 (unknown run), 1000 after ``workflow_ended``."""
    deps = await deps_of()
    workflow_id = websocket.path_params["workflow_id"]
    request = as_http_request(websocket)
    await websocket.accept()
    try:
        await authenticate(request, deps.settings)
    except AuthError as exc:
        await audit(deps, action_of(request), None, "unauthenticated", exc.status, None, exc.reason)
        await websocket.close(code=4000 + exc.status, reason=exc.reason)
        return
    store = deps.workflows
    run = await store.get_run(workflow_id) if store and valid_id(workflow_id) else None
    if store is None or run is None or run.workspace != deps.settings.workspace:
        await websocket.close(code=4404, reason=f"unknown workflow run {workflow_id!r}")
        return

    async def send() -> None:
        after = websocket.query_params.get("after") or None
        async for event in workflow_hub(store).subscribe(workflow_id, after):
            await websocket.send_text(event.model_dump_json())

    sender = asyncio.create_task(send())
    receiver = asyncio.create_task(_until_disconnect(websocket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await task
    if sender in done:
        try:
            sender.result()
        except WebSocketDisconnect:
            return
        await websocket.close(code=1000)


# ---- WebSocket -----------------------------------------------------------------------------


def _same_origin(websocket: WebSocket) -> bool:
    """The handshake comes from a page the api served: its ``Origin`` names the ``Host``."""
    origin, host = websocket.headers.get("origin"), websocket.headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc == host


def as_http_request(websocket: WebSocket) -> Request:
    """The handshake as an HTTP ``GET`` for the api's authentication and audit; ``?token=``
    (browsers cannot set headers on a WebSocket) becomes the bearer token, or else the run
    viewer's ``cloudagents_token`` cookie, if the page that opens the socket is the api's own
    (browsers send cookies on cross-site WebSocket handshakes that no CORS check stops)."""
    scope = dict(websocket.scope)
    headers = list(scope.get("headers", []))
    token = websocket.query_params.get("token")
    if not token and _same_origin(websocket):
        token = websocket.cookies.get(TOKEN_COOKIE)
    if token and not any(name.lower() == b"authorization" for name, _ in headers):
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    scope.update(type="http", method="GET", headers=headers)
    return Request(scope)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _send_events(
    websocket: WebSocket, subscription: Subscription, view: Callable[[RunEvent], dict[str, Any]]
) -> None:
    async for event in subscription:
        await websocket.send_text(json.dumps(view(event)))


DepsProvider = Callable[[], Awaitable[Deps]]


async def _websocket_stream(
    websocket: WebSocket, deps_of: DepsProvider, view: Callable[[RunEvent], dict[str, Any]]
) -> None:
    deps = await deps_of()
    run_id = websocket.path_params["run_id"]
    request = as_http_request(websocket)
    await websocket.accept()
    try:
        await authenticate(request, deps.settings)
    except AuthError as exc:
        await audit(deps, action_of(request), None, "unauthenticated", exc.status, None, exc.reason)
        await websocket.close(code=4000 + exc.status, reason=exc.reason)
        return
    run = await deps.runs.get_run(run_id) if valid_id(run_id) else None
    if run is None:
        await websocket.close(code=4404, reason=f"unknown run {run_id!r}")
        return
    subscription = hub_for(deps).subscribe(run_id, websocket.query_params.get("after"))
    sender = asyncio.create_task(_send_events(websocket, subscription, view))
    receiver = asyncio.create_task(_until_disconnect(websocket))
    try:
        done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await task
    finally:
        subscription.close()
    if sender in done:
        try:
            sender.result()
        except WebSocketDisconnect:
            return
        if subscription.close_reason:
            await websocket.close(code=SLOW_SUBSCRIBER_CLOSE, reason=subscription.close_reason)
        else:
            await websocket.close(code=1000)


async def websocket_events(websocket: WebSocket, deps_of: DepsProvider) -> None:
    """``/runs/{id}/events/ws``: close codes 4401/4403 (authentication), 4404 (unknown run),
    1008 (fell too far behind: reconnect with ``?after=``), 1000 after the terminal event."""
    await _websocket_stream(websocket, deps_of, event_json)


async def agent_stream_websocket(websocket: WebSocket, deps_of: DepsProvider) -> None:
    """``/agent-stream/{id}``: seed 004's ``new WebSocket('ws://HOST/agent-stream/{id}')``,
    the same close codes as ``/runs/{id}/events/ws``."""
    await _websocket_stream(websocket, deps_of, agent_stream_json)
