"""A run's events live, in process: SSE through functions-framework's api app and the WebSocket
beside it, while a ``Pump`` carries the run (the scripted model pauses between its chunks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from functions_framework.aio import create_asgi_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cloudagents.adapters.memory.stores import InMemoryAuditStore
from cloudagents.bootstrap import get_deps
from cloudagents.domain.events import (
    RUN_EVENT_ADAPTER,
    ThinkingStatus,
    ToolCallEvent,
    ToolResultEvent,
)
from cloudagents.domain.runs import RunRecord
from cloudagents.runtime.app import ASGIApp, build_api_app
from cloudagents.runtime.executor import _ChunkBatcher
from cloudagents.runtime.graphql import AgentStreamEvent
from cloudagents.runtime.streaming import RunEventFollower, agent_stream_json
from tests.services.conftest import OUTSIDER_TOKEN, TOKEN, Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
ROOT = Path(__file__).resolve().parents[2]
API_SOURCE = ROOT / "services" / "api" / "main.py"
REPLY = "The answer is forty-two, which the calculator confirmed: six times seven is 42. " * 2
Message = dict[str, Any]


def slow_agent(agent_id: str = "slow", delay: float = 1.2) -> dict[str, Any]:
    """A tool call, then a ~160-character reply streamed in 16-character pieces over ``delay``."""
    return scripted_agent(
        agent_id,
        model={
            "provider": "scripted",
            "name": "scripted-slow",
            "script": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                {"content": REPLY, "delay_seconds": delay},
            ],
        },
    )


# ---- an httpx transport that streams the ASGI response (httpx.ASGITransport buffers it) -------


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, sent: asyncio.Queue[Message], disconnect: asyncio.Event, task: asyncio.Task[None]
    ) -> None:
        self.sent, self.disconnect, self.task = sent, disconnect, task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.sent.get()
            if message["type"] == "app.done":
                return
            if message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    return

    async def aclose(self) -> None:
        self.disconnect.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 5)


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        sent: asyncio.Queue[Message] = asyncio.Queue()
        disconnect = asyncio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            await sent.put(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": ("svc", 80),
            "client": ("127.0.0.1", 50000),
            "extensions": {},
        }
        task = asyncio.create_task(self.app(scope, receive, send))
        task.add_done_callback(lambda _: sent.put_nowait({"type": "app.done"}))
        start = await sent.get()
        assert start["type"] == "http.response.start", start
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_Body(sent, disconnect, task),
            request=request,
        )


@pytest.fixture
def streaming_api(stack: Stack) -> httpx.AsyncClient:
    app = create_asgi_app("api", str(API_SOURCE))
    return httpx.AsyncClient(
        transport=StreamingASGITransport(app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20.0,
    )


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """``(id, event, data)`` per SSE event of a streaming response."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def start_slow_run(clients: dict[str, httpx.AsyncClient], pump: Pump) -> str:
    assert (await clients["api"].post("/agents", json=slow_agent())).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": "slow", "message": "6*7?"})
    assert started.status_code == 202
    return str(started.json()["run_id"])


async def stored_events(api: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    return list((await api.get(f"/runs/{run_id}/events")).json()["events"])


# ---- SSE -------------------------------------------------------------------------------------


async def test_sse_streams_a_run_live_from_start_to_completed(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    carrying = asyncio.create_task(pump.run())
    received: list[dict[str, Any]] = []
    status_at_first_chunk = None
    async with streaming_api.stream(
        "GET", f"/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event_id, kind, data in sse_events(response):
            assert (event_id, kind) == (data["id"], data["type"])
            received.append(data)
            if kind == "content_chunk" and status_at_first_chunk is None:
                run = (await clients["api"].get(f"/runs/{run_id}")).json()
                status_at_first_chunk = (run["status"], run["result"])
    await carrying
    assert status_at_first_chunk is not None
    assert status_at_first_chunk[0] != "finished" and status_at_first_chunk[1] is None
    assert received == await stored_events(clients["api"], run_id)
    kinds = [e["type"] for e in received]
    assert kinds[:5] == ["thinking", "tool_call", "thinking", "tool_result", "thinking"]
    assert kinds[-1] == "completed"
    chunks = [e["chunk"] for e in received if e["type"] == "content_chunk"]
    assert "".join(chunks) == REPLY
    assert 2 <= len(chunks) < len(REPLY) / 16  # batched by time: several events, fewer than pieces


async def test_sse_reconnect_with_last_event_id_loses_and_repeats_nothing(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    carrying = asyncio.create_task(pump.run())
    first: list[dict[str, Any]] = []
    async with streaming_api.stream("GET", f"/runs/{run_id}/events/stream") as response:
        async for _, kind, data in sse_events(response):
            first.append(data)
            if kind == "content_chunk":
                break  # the connection drops mid-reply
    assert (await clients["api"].get(f"/runs/{run_id}")).json()["status"] != "finished"
    second: list[dict[str, Any]] = []
    headers = {"Accept": "text/event-stream", "Last-Event-ID": first[-1]["id"]}
    async with streaming_api.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
        second = [data async for _, _, data in sse_events(response)]
    await carrying
    full = await stored_events(clients["api"], run_id)
    assert first + second == full
    assert len({e["id"] for e in first + second}) == len(full)
    assert second[-1]["type"] == "completed" and any(e["type"] == "content_chunk" for e in second)
    # ?after= does the same as Last-Event-ID
    async with streaming_api.stream(
        "GET", f"/runs/{run_id}/events/stream", params={"after": first[-1]["id"]}
    ) as response:
        assert [data async for _, _, data in sse_events(response)] == second


async def test_sse_needs_the_api_token_and_a_known_run(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    anonymous = await streaming_api.get(
        "/runs/anything/events/stream", headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    assert (await streaming_api.get("/runs/nope/events/stream")).status_code == 404
    assert (await streaming_api.get("/runs/nope/events/ws")).status_code == 426


async def test_a_cancelled_run_stream_ends_with_a_failed_event(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)  # not pumped: it stays queued
    assert (await clients["api"].post(f"/runs/{run_id}/cancel")).status_code == 200
    async with streaming_api.stream("GET", f"/runs/{run_id}/events/stream") as response:
        events = [data async for _, _, data in sse_events(response)]
    assert [(e["type"], e["exit"]) for e in events] == [("failed", "CANCELLED")]
    headers = {"Last-Event-ID": events[0]["id"]}
    async with streaming_api.stream(
        "GET", f"/runs/{run_id}/events/stream", headers=headers
    ) as response:
        assert [data async for _, _, data in sse_events(response)] == []


async def test_keep_alives_while_quiet_and_the_end_when_cancelled_mid_stream(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)  # not pumped: quiet until cancelled
    lines: list[str] = []
    async with streaming_api.stream(
        "GET", f"/runs/{run_id}/events/stream", params={"keepalive": "1"}
    ) as response:
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": keep-alive":
                assert (await clients["api"].post(f"/runs/{run_id}/cancel")).status_code == 200
    assert lines[:2] == ["retry: 1000", f": streaming {run_id}"]
    assert ": keep-alive" in lines
    assert lines[-3] == "event: failed" and lines[-1] == ""  # the last frame, then the end
    closing = json.loads(lines[-2].removeprefix("data: "))
    assert (closing["exit"], lines[-4]) == ("CANCELLED", f"id: {closing['id']}")


async def test_tool_results_written_out_of_order_are_sent_in_order(stack: Stack) -> None:
    """Concurrent tool calls finish in any order; the stream never skips the slower one."""
    _, pump = stack
    runs = pump.deps.runs
    run_id = "ooo-run"
    await runs.create_run(RunRecord(run_id=run_id, agent_id="slow", source="test"), [])
    await runs.add_events(
        run_id,
        [
            ToolCallEvent(
                run_id=run_id, seq=0, id=f"000000-b000{i}", call_id=f"c{i}", tool_name="t"
            )
            for i in range(3)
        ],
    )
    follower = RunEventFollower(pump.deps, run_id)

    def result(i: int) -> ToolResultEvent:
        return ToolResultEvent(
            run_id=run_id, seq=0, id=f"000000-c000{i}", call_id=f"c{i}", tool_name="t", result=i
        )

    assert [e.id for e in await follower.poll()] == [f"000000-b000{i}" for i in range(3)]
    await runs.add_events(run_id, [result(2)])
    assert await follower.poll() == []  # c0002 waits for c0000 and c0001
    await runs.add_events(run_id, [result(0)])
    assert [e.id for e in await follower.poll()] == ["000000-c0000"]
    await runs.add_events(run_id, [result(1)])
    assert [e.id for e in await follower.poll()] == ["000000-c0001", "000000-c0002"]
    # a reader resuming after c0000 with c0002 stored but not c0001 also waits
    await runs.add_events(
        "other", [ThinkingStatus(run_id="other", seq=0, id="000000-c0002", status="x")]
    )
    await runs.create_run(RunRecord(run_id="other", agent_id="slow", source="test"), [])
    resumed = RunEventFollower(pump.deps, "other", after="000000-c0000")
    assert await resumed.poll() == []


async def test_chunks_flush_at_400_characters_or_after_a_quarter_second(stack: Stack) -> None:
    _, pump = stack
    batcher = _ChunkBatcher(pump.deps, "batch-run", 3)
    await batcher.add("x" * 399)
    await batcher.add("y")  # 400 buffered: flushed at once
    await batcher.add("early")
    batcher.last_flush -= 0.3  # 0.3 s since the last flush
    await batcher.add(" late")
    await batcher.add("tail")
    await batcher.flush()  # the end of the reply
    events = await pump.deps.runs.events("batch-run")
    assert [(e.id, getattr(e, "chunk", None)) for e in events] == [
        ("000003-a0000", "x" * 399 + "y"),
        ("000003-a0001", "early late"),
        ("000003-a0002", "tail"),
    ]


async def test_a_thinking_status_takes_the_next_phase_a_id_and_chunks_follow_it(
    stack: Stack,
) -> None:
    _, pump = stack
    batcher = _ChunkBatcher(pump.deps, "thinking-run", 2)
    await batcher.status("calling model m")
    await batcher.add("x" * 400)
    await batcher.add("tail")
    await batcher.status("again")  # flushes what is buffered first
    await batcher.flush()
    events = await pump.deps.runs.events("thinking-run")
    assert [(e.id, e.type) for e in events] == [
        ("000002-a0000", "thinking"),
        ("000002-a0001", "content_chunk"),
        ("000002-a0002", "content_chunk"),
        ("000002-a0003", "thinking"),
    ]


async def test_a_run_with_a_tool_call_says_what_it_is_doing_and_completes_with_tokens(
    stack: Stack,
) -> None:
    clients, pump = stack
    agent = scripted_agent(
        model={
            "provider": "scripted",
            "name": "scripted-tokens",
            "script": [
                {
                    "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
                    "total_tokens": 30,
                },
                {"content": "6*7 = 42", "total_tokens": 21},
            ],
        }
    )
    assert (await clients["api"].post("/agents", json=agent)).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7?"})
    run_id = started.json()["run_id"]
    await pump.run()
    events = await stored_events(clients["api"], run_id)
    assert [(e["id"], e["type"], e.get("status")) for e in events] == [
        ("000000-a0000", "thinking", "calling model scripted-tokens"),
        ("000000-b0000", "tool_call", None),
        ("000000-b0001", "thinking", "running tools: calculator#0"),
        ("000000-c0000", "tool_result", None),
        ("000001-a0000", "thinking", "calling model scripted-tokens"),
        ("000001-a0001", "content_chunk", None),
        ("000001-b0000", "completed", None),
    ]
    completed = events[-1]
    # the scripted model splits each turn's total in half: 15 + 15, then 10 + 11
    assert (completed["prompt_tokens"], completed["completion_tokens"]) == (25, 26)
    assert completed["total_tokens"] == 51
    event = RUN_EVENT_ADAPTER.validate_python(completed)
    assert agent_stream_json(event)["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 26,
        "total_tokens": 51,
    }
    view = AgentStreamEvent.of(event)
    assert (view.prompt_tokens, view.completion_tokens, view.total_tokens) == (25, 26, 51)
    thinking = RUN_EVENT_ADAPTER.validate_python(events[0])
    assert agent_stream_json(thinking)["status"] == "calling model scripted-tokens"
    assert AgentStreamEvent.of(thinking).total_tokens is None


# ---- ?token= on the SSE routes (EventSource cannot set headers) ------------------------------


@pytest.fixture
def anonymous_api(stack: Stack) -> httpx.AsyncClient:
    app = create_asgi_app("api", str(API_SOURCE))
    return httpx.AsyncClient(
        transport=StreamingASGITransport(app), base_url="http://svc", timeout=20.0
    )


async def finished_run(stack: Stack) -> str:
    clients, pump = stack
    assert (await clients["api"].post("/agents", json=scripted_agent())).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7?"})
    await pump.run()
    return str(started.json()["run_id"])


async def test_sse_routes_accept_the_token_in_the_query_and_never_log_it(
    stack: Stack, anonymous_api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await finished_run(stack)
    stored = await stored_events(stack[0]["api"], run_id)
    for path, token in [
        (f"/agent-stream/{run_id}", TOKEN),
        (f"/runs/{run_id}/events/stream", OUTSIDER_TOKEN),  # any api principal, as with a header
    ]:
        async with anonymous_api.stream("GET", path, params={"token": token}) as response:
            assert response.status_code == 200
            received = [data async for _, _, data in sse_events(response)]
        assert [e["id"] for e in received] == [e["id"] for e in stored]
    audit = stack[1].deps.audit
    assert isinstance(audit, InMemoryAuditStore)
    server_logs = [r.getMessage() for r in caplog.records if r.name.startswith("cloudagents")]
    for text in [*server_logs, *(r.model_dump_json() for r in audit.records)]:
        assert TOKEN not in text and OUTSIDER_TOKEN not in text


async def test_query_tokens_are_refused_when_wrong_or_off_the_sse_routes(
    stack: Stack, anonymous_api: httpx.AsyncClient
) -> None:
    run_id = await finished_run(stack)
    refused = [
        ("GET", f"/agent-stream/{run_id}", "wrong-token-0123456789abcdef"),
        ("GET", f"/runs/{run_id}/events/stream", ""),
        ("GET", f"/runs/{run_id}", TOKEN),
        ("GET", f"/runs/{run_id}/events", TOKEN),
        ("GET", "/runs", TOKEN),
        ("POST", f"/runs/{run_id}/cancel", TOKEN),
    ]
    for method, path, token in refused:
        response = await anonymous_api.request(method, path, params={"token": token})
        assert response.status_code == 401, (method, path)
    audit = stack[1].deps.audit
    assert isinstance(audit, InMemoryAuditStore)
    unauthenticated = [r for r in audit.records if r.outcome == "unauthenticated"]
    assert len(unauthenticated) == len(refused)
    assert all("token" not in r.action and TOKEN not in r.reason for r in unauthenticated)


# ---- WebSocket -------------------------------------------------------------------------------


class WebSocketSession:
    """A WebSocket client driving the ASGI app in this event loop."""

    def __init__(self, app: ASGIApp, path: str, query: str = "", headers: Any = ()) -> None:
        self.app, self.path, self.query, self.headers = app, path, query, list(headers)
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def __aenter__(self) -> WebSocketSession:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": self.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"svc"), *self.headers],
            "server": ("svc", 80),
            "client": ("127.0.0.1", 50001),
            "subprotocols": [],
            "extensions": {},
        }
        await self.to_app.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        assert (await self.receive())["type"] == "websocket.accept"
        return self

    async def receive(self) -> Message:
        return await asyncio.wait_for(self.from_app.get(), 10)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self.receive())["type"] == "websocket.send":
            yield json.loads(message["text"])
        assert message == {"type": "websocket.close", "code": 1000, "reason": ""}

    async def __aexit__(self, *exc: object) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
def ws_app(stack: Stack) -> ASGIApp:
    return build_api_app(API_SOURCE, lambda: get_deps("api"))


async def test_websocket_streams_live_and_resumes_after_an_id(
    stack: Stack, ws_app: ASGIApp
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    carrying = asyncio.create_task(pump.run())
    path = f"/runs/{run_id}/events/ws"
    first: list[dict[str, Any]] = []
    async with WebSocketSession(ws_app, path, f"token={TOKEN}") as ws:
        async for event in ws.events():
            first.append(event)
            if event["type"] == "content_chunk":
                run = (await clients["api"].get(f"/runs/{run_id}")).json()
                assert run["status"] != "finished"  # the first words arrived mid-reply
                break
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    async with WebSocketSession(ws_app, path, f"after={first[-1]['id']}", headers) as ws:
        second = [event async for event in ws.events()]
    await carrying
    full = await stored_events(clients["api"], run_id)
    assert first + second == full
    assert second[-1]["type"] == "completed"
    # the HTTP side of the same app still serves the api
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ws_app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert (await http.get(f"/runs/{run_id}/events")).json()["events"] == full


async def test_websocket_refuses_bad_tokens_and_unknown_runs(stack: Stack, ws_app: ASGIApp) -> None:
    async with WebSocketSession(ws_app, "/runs/x/events/ws", "token=wrong-token-0123456789") as ws:
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4401
    async with WebSocketSession(ws_app, "/runs/nope/events/ws", f"token={TOKEN}") as ws:
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4404


async def test_websocket_through_starlettes_test_client(stack: Stack, ws_app: ASGIApp) -> None:
    """The same endpoint through Starlette's TestClient (a finished run: its own event loop)."""
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    await pump.run()
    full = await stored_events(clients["api"], run_id)

    def read_all() -> tuple[list[dict[str, Any]], int]:
        with TestClient(ws_app) as client:
            url = f"/runs/{run_id}/events/ws"
            with client.websocket_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                events = []
                try:
                    while True:
                        events.append(ws.receive_json())
                except WebSocketDisconnect as closed:
                    return events, closed.code
        raise AssertionError("unreachable")

    events, code = await asyncio.to_thread(read_all)
    assert (events, code) == (full, 1000)


async def test_a_tree_stream_has_the_events_of_the_runs_below(
    stack: Stack, streaming_api: httpx.AsyncClient
) -> None:
    clients, pump = stack
    for peer in ("alpha", "beta"):
        definition = slow_agent()
        definition.update(
            id=peer,
            model={"provider": "scripted", "name": "s", "script": [{"content": f"{peer} ok"}]},
            tools=[],
        )
        assert (await clients["api"].post("/agents", json=definition)).status_code == 201
    boss = slow_agent()
    boss.update(
        id="boss",
        model={
            "provider": "scripted",
            "name": "s",
            "script": [
                {
                    "tool_calls": [
                        {"name": "invoke_alpha", "arguments": {"request": "a"}},
                        {"name": "invoke_beta", "arguments": {"request": "b"}},
                    ]
                },
                {"content": "both"},
            ],
        },
        tools=[],
        allowed_peers=["alpha", "beta"],
    )
    assert (await clients["api"].post("/agents", json=boss)).status_code == 201
    run_id = (
        await clients["api"].post("/runs", json={"agent_id": "boss", "message": "go"})
    ).json()["run_id"]
    carrying = asyncio.create_task(pump.run())
    received: list[tuple[str, dict[str, Any]]] = []
    async with streaming_api.stream(
        "GET", f"/runs/{run_id}/events/stream", params={"tree": "1", "keepalive": "1"}
    ) as response:
        assert response.status_code == 200
        async for event_id, _, data in sse_events(response):
            assert event_id == f"{data['run_id']}/{data['id']}"
            received.append((data["run_id"], data))
    await carrying
    children = [f"{run_id}-c000000-000", f"{run_id}-c000000-001"]
    for rid in (run_id, *children):
        mine = [d for r, d in received if r == rid]
        assert mine == await stored_events(clients["api"], rid), rid  # each run complete, in order
    assert (await streaming_api.get("/runs/nope/events/stream?tree=1")).status_code == 404
