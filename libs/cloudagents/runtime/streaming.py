"""A run's events, live: Server-Sent Events through the api, and a WebSocket beside it.

Both read the run's ``events`` sub-collection by polling the store every ``POLL_SECONDS`` (a
Firestore query ``id > last``, ordered by id); Firestore listeners are not reliably available
on the async client against the emulator, and polling works the same everywhere. Event ids sort
in the order events happen (``{seq:06d}-{phase}{n:04d}``), so a client that reconnects with the
last id it saw (``Last-Event-ID``, ``?after=``) gets exactly what it missed: no gaps, no
duplicates. One subtlety keeps that true: the tool results of one step (phase ``c``) are written
by concurrent tool calls in any order, so a result is sent only once every lower-numbered result
of its step is stored (or the run has moved past the step). A stream ends with the run's
``completed`` or ``failed`` event; a run finished without one (cancelled) ends with a ``failed``
event made from its result, with the same id on every connection.

SSE: ``GET /runs/{id}/events`` with ``Accept: text/event-stream``, or ``GET
/runs/{id}/events/stream``, served by ``handle_api`` (same authentication as every route).

WebSocket: ``/runs/{id}/events/ws`` (``?token=`` or ``Authorization``, ``?after=``), one JSON
event per text message. functions-framework's ASGI app routes HTTP only, so the WebSocket needs
the app :func:`build_api_app` makes (``services/api/main.py:asgi_app``) served by a server with
WebSocket support (uvicorn with ``websockets`` or ``wsproto`` installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloudagents.domain.events import TERMINAL_EVENT_TYPES, Completed, Failed, RunEvent, event_id
from cloudagents.runtime.auth import AuthError, Principal, authenticate
from cloudagents.runtime.deps import Deps

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
RUN_CHECK_SECONDS = 1.0
RETRY_MILLISECONDS = 1000
WS_PATH = "/runs/{run_id}/events/ws"
SUCCESS_EXITS = frozenset({"SATISFIED", "HANDOFF"})
_EVENT_ID = re.compile(r"^(\d{6,})-([a-z])(\d{4,})$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def _parse_id(value: str) -> tuple[int, str, int] | None:
    match = _EVENT_ID.match(value)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(3))


def gap_free_prefix(events: list[RunEvent], after: str | None) -> list[RunEvent]:
    """The longest prefix of ``events`` (sorted by id, all after ``after``) that no event still
    to be written can sort into. Only tool results (phase ``c``) of the latest step present are
    written out of order; a result waits until the ones numbered below it are stored."""
    parsed = [_parse_id(e.id) for e in events]
    latest = max((p[0] for p in parsed if p is not None), default=-1)
    next_result: dict[int, int] = {}
    cursor = _parse_id(after) if after else None
    if cursor is not None and cursor[1] == "c":
        next_result[cursor[0]] = cursor[2] + 1
    ready: list[RunEvent] = []
    for event, key in zip(events, parsed, strict=True):
        if key is not None and key[1] == "c" and key[0] == latest:
            if key[2] != next_result.get(key[0], 0):
                break
            next_result[key[0]] = key[2] + 1
        ready.append(event)
    return ready


class RunEventFollower:
    """Reads a run's events in order, gap-free, until its terminal event.

    ``poll()`` returns what can be sent now (possibly nothing); ``finished`` turns true once the
    terminal event has been returned or the run ended without one."""

    def __init__(
        self,
        deps: Deps,
        run_id: str,
        *,
        after: str | None = None,
        run_check_seconds: float = RUN_CHECK_SECONDS,
    ) -> None:
        self.deps = deps
        self.run_id = run_id
        self.after = after or None
        self.finished = False
        self.run_check_seconds = run_check_seconds
        self._last_run_check = 0.0

    async def poll(self) -> list[RunEvent]:
        if self.finished:
            return []
        stored = await self.deps.runs.events(self.run_id, after=self.after)
        ready = self._through_terminal(gap_free_prefix(stored, self.after))
        if ready or self.finished:
            return ready
        if time.monotonic() - self._last_run_check < self.run_check_seconds:
            return []
        self._last_run_check = time.monotonic()
        return await self._check_run()

    def _through_terminal(self, events: list[RunEvent]) -> list[RunEvent]:
        for n, event in enumerate(events):
            if event.type in TERMINAL_EVENT_TYPES:
                self.finished = True
                events = events[: n + 1]
                break
        if events:
            self.after = events[-1].id
        return events

    async def _check_run(self) -> list[RunEvent]:
        """Nothing new for a while: has the run ended without a terminal event (cancelled)?"""
        run = await self.deps.runs.get_run(self.run_id)
        if run is None:
            self.finished = True
            return []
        if not run.finished:
            return []
        # Finished: every event is written now but late tool results of a cancelled step.
        ready = self._through_terminal(await self.deps.runs.events(self.run_id, after=self.after))
        if self.finished:
            return ready
        self.finished = True
        everything = await self.deps.runs.events(self.run_id)
        if any(e.type in TERMINAL_EVENT_TYPES for e in everything) or run.result is None:
            return ready
        closing_id = event_id(run.seq, "b", 0)
        if self.after is not None and closing_id <= self.after:
            return ready
        result = run.result
        closing: RunEvent
        if result.exit.value in SUCCESS_EXITS:
            closing = Completed(
                run_id=run.run_id,
                seq=run.seq,
                id=closing_id,
                exit=result.exit.value,
                total_tokens=result.total_tokens,
            )
        else:
            closing = Failed(
                run_id=run.run_id,
                seq=run.seq,
                id=closing_id,
                exit=result.exit.value,
                error=str(result.payload.get("reason", "")),
            )
        self.after = closing_id
        return [*ready, closing]


# ---- Server-Sent Events --------------------------------------------------------------------


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def sse_frame(event: RunEvent) -> bytes:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def sse_stream(
    follower: RunEventFollower,
    *,
    poll_seconds: float = POLL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    """The body of an SSE response: events as they are stored, keep-alive comments between."""
    yield f"retry: {RETRY_MILLISECONDS}\n: streaming {follower.run_id}\n\n".encode()
    last_write = time.monotonic()
    while True:
        batch = await follower.poll()
        for event in batch:
            yield sse_frame(event)
        now = time.monotonic()
        if batch:
            last_write = now
        if follower.finished:
            return
        if now - last_write >= keepalive_seconds:
            yield b": keep-alive\n\n"
            last_write = now
        await asyncio.sleep(poll_seconds)


def _keepalive(request: Request) -> float:
    try:
        return min(max(float(request.query_params.get("keepalive", KEEPALIVE_SECONDS)), 1.0), 60.0)
    except ValueError:
        return KEEPALIVE_SECONDS


async def event_stream_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /runs/{id}/events/stream`` (or ``/events`` asking for ``text/event-stream``)."""
    run = await deps.runs.get_run(params["run_id"])
    if run is None:
        return JSONResponse({"error": f"unknown run {params['run_id']!r}"}, status_code=404)
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    follower = RunEventFollower(deps, run.run_id, after=after)
    return StreamingResponse(
        sse_stream(follower, keepalive_seconds=_keepalive(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


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


# ---- WebSocket -----------------------------------------------------------------------------


def _as_http_request(websocket: WebSocket) -> Request:
    """The handshake as an HTTP ``GET`` for the api's authentication and audit; ``?token=``
    (browsers cannot set headers on a WebSocket) becomes the bearer token."""
    scope = dict(websocket.scope)
    headers = list(scope.get("headers", []))
    token = websocket.query_params.get("token")
    if token and not any(name.lower() == b"authorization" for name, _ in headers):
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    scope.update(type="http", method="GET", headers=headers)
    return Request(scope)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _send_events(
    websocket: WebSocket, follower: RunEventFollower, poll_seconds: float
) -> None:
    while True:
        for event in await follower.poll():
            await websocket.send_text(json.dumps(event.model_dump(mode="json")))
        if follower.finished:
            return
        await asyncio.sleep(poll_seconds)


async def websocket_events(websocket: WebSocket, deps: Deps | None = None) -> None:
    """``/runs/{id}/events/ws``: close codes 4401/4403 (authentication), 4404 (unknown run),
    1000 after the terminal event."""
    from cloudagents.bootstrap import get_deps
    from cloudagents.runtime.api import audit, valid_id

    deps = deps or await get_deps("api")
    run_id = websocket.path_params["run_id"]
    request = _as_http_request(websocket)
    await websocket.accept()
    try:
        await authenticate(request, deps.settings)
    except AuthError as exc:
        await audit(deps, request, None, "unauthenticated", exc.status, None, exc.reason)
        await websocket.close(code=4000 + exc.status, reason=exc.reason)
        return
    run = await deps.runs.get_run(run_id) if valid_id(run_id) else None
    if run is None:
        await websocket.close(code=4404, reason=f"unknown run {run_id!r}")
        return
    follower = RunEventFollower(deps, run_id, after=websocket.query_params.get("after"))
    sender = asyncio.create_task(_send_events(websocket, follower, POLL_SECONDS))
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


def build_api_app(source: str | Path) -> ASGIApp:
    """The api as one ASGI app: functions-framework's HTTP app for ``source`` (the ``api``
    target) plus the WebSocket route, which functions-framework cannot route."""
    from functions_framework.aio import create_asgi_app

    http_app: ASGIApp = create_asgi_app("api", str(source))  # type: ignore[no-untyped-call]
    ws_app = Starlette(routes=[WebSocketRoute(WS_PATH, websocket_events)])

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "websocket":
            await ws_app(scope, receive, send)
        else:
            await http_app(scope, receive, send)

    return app
