"""The api's event hub, GraphQL at ``/graphql`` and seed 004's ``/agent-stream/{id}``, in
process: one feed per watched run whatever the protocol, and the same events in the same order
on every path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from cloudagents.bootstrap import get_deps
from cloudagents.domain.events import ContentChunk, ToolCallEvent
from cloudagents.domain.runs import PendingItem, RunRecord, RunStatus
from cloudagents.runtime.app import ASGIApp, build_api_app
from cloudagents.runtime.hub import EventHub, HubSettings, RunFeed, Subscription, hub_for
from tests.services.conftest import TOKEN, Pump, scripted_agent
from tests.services.test_streaming_services import (
    API_SOURCE,
    StreamingASGITransport,
    WebSocketSession,
    sse_events,
    start_slow_run,
    stored_events,
)

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
Message = dict[str, Any]
STREAM = """subscription S($id: String!) {
  agentExecutionStream(executionId: $id) {
    id executionId eventType content status toolName error timestamp
  }
}"""


@pytest.fixture
def app(stack: Stack) -> ASGIApp:
    return build_api_app(API_SOURCE, lambda: get_deps("api"))


class GraphQLSession:
    """A ``graphql-transport-ws`` client driving the ASGI app in this event loop."""

    def __init__(
        self, app: ASGIApp, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.app, self.query, self.headers = app, query, headers or []
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def __aenter__(self) -> GraphQLSession:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": self.query.encode(),
            "root_path": "",
            "headers": [
                (b"host", b"svc"),
                (b"sec-websocket-protocol", b"graphql-transport-ws"),
                *self.headers,
            ],
            "server": ("svc", 80),
            "client": ("127.0.0.1", 50002),
            "subprotocols": ["graphql-transport-ws"],
            "extensions": {},
        }
        await self.to_app.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        accepted = await self.receive()
        assert accepted["type"] == "websocket.accept", accepted
        assert accepted.get("subprotocol") == "graphql-transport-ws"
        return self

    async def receive(self) -> Message:
        return await asyncio.wait_for(self.from_app.get(), 10)

    async def send(self, message: dict[str, Any]) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def receive_json(self) -> dict[str, Any]:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return dict(json.loads(message["text"]))

    async def init(self, payload: dict[str, Any]) -> Message:
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def subscribe(self, run_id: str) -> None:
        await self.send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": STREAM, "variables": {"id": run_id}},
            }
        )

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self.receive_json())["type"] == "next":
            assert "errors" not in message["payload"], message
            yield message["payload"]["data"]["agentExecutionStream"]
        assert message == {"id": "1", "type": "complete"}

    async def __aexit__(self, *exc: object) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


def streaming_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=StreamingASGITransport(app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20.0,
    )


def graphql_http(app: ASGIApp) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``POST /graphql`` with the bearer token: the response body, ``data`` and ``errors``."""
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    async def gql(query: str, **variables: Any) -> dict[str, Any]:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        return dict(response.json())

    return gql


# ---- the hub ---------------------------------------------------------------------------------


async def test_subscribers_of_one_run_share_one_feed_and_it_stops_with_the_last(
    stack: Stack,
) -> None:
    _, pump = stack
    run_id = "shared-run"
    await pump.deps.runs.create_run(RunRecord(run_id=run_id, agent_id="a", source="test"), [])
    hub = EventHub(pump.deps)
    first, second = hub.subscribe(run_id), hub.subscribe(run_id)
    assert list(hub.feeds) == [run_id] and hub.subscriber_count(run_id) == 2
    feed = hub.feeds[run_id]
    chunk = ContentChunk(run_id=run_id, id="000000-a0000", chunk="hi")
    await pump.deps.runs.add_events(run_id, [chunk])
    assert await first.next_event() == chunk and await second.next_event() == chunk
    first.close()
    assert hub.subscriber_count(run_id) == 1 and not feed.stopped
    second.close()
    assert hub.subscriber_count() == 0 and hub.feeds == {} and feed.stopped
    assert feed.task is not None
    with pytest.raises(asyncio.CancelledError):
        await feed.task


async def test_a_subscriber_resuming_behind_the_feed_gets_its_backlog_then_the_live_events(
    stack: Stack,
) -> None:
    _, pump = stack
    runs, run_id = pump.deps.runs, "resume-run"
    await runs.create_run(RunRecord(run_id=run_id, agent_id="a", source="test"), [])

    chunks = [ContentChunk(run_id=run_id, id=f"000000-a{n:04d}", chunk=str(n)) for n in range(4)]
    await runs.add_events(run_id, chunks[:3])
    hub = EventHub(pump.deps)
    ahead = hub.subscribe(run_id, after="000000-a0001")  # the feed starts here
    assert await ahead.next_event() == chunks[2]
    behind = hub.subscribe(run_id, after="000000-a0000")
    everyone = hub.subscribe(run_id)
    await runs.add_events(run_id, chunks[3:])
    assert await ahead.next_event() == chunks[3]
    assert [await behind.next_event() for _ in range(3)] == chunks[1:]
    assert [await everyone.next_event() for _ in range(4)] == chunks
    assert hub.subscriber_count(run_id) == 3 and len(hub.feeds) == 1
    for subscription in (ahead, behind, everyone):
        subscription.close()
    assert hub.subscriber_count() == 0


async def test_a_slow_subscriber_is_dropped_with_a_reason_and_the_others_carry_on(
    stack: Stack,
) -> None:
    _, pump = stack
    runs, run_id = pump.deps.runs, "slow-reader"
    await runs.create_run(RunRecord(run_id=run_id, agent_id="a", source="test"), [])
    hub = EventHub(pump.deps, HubSettings(queue_size=2))
    slow, fast = hub.subscribe(run_id), hub.subscribe(run_id)
    feed = hub.feeds[run_id]
    events = [ContentChunk(run_id=run_id, id=f"000000-a{n:04d}", chunk=str(n)) for n in range(3)]
    for event in events:  # the feed fans out; fast reads each, slow reads none
        feed._fan_out([event])
        assert await fast.next_event() == event
    assert slow.close_reason is not None and "too slow: 2 events unread" in slow.close_reason
    # what it had queued (no gap), then the end
    assert [await slow.next_event() for _ in range(3)] == [*events[:2], None]
    assert hub.subscriber_count(run_id) == 1
    fast.close()


async def test_the_idle_rule_reads_only_the_run_document_while_tools_run(stack: Stack) -> None:
    """Ticks driven by hand (no sleeping): a run waiting for its tools costs one run-document
    read per tick, no events query, until the document changes."""
    _, pump = stack
    runs, run_id = pump.deps.runs, "idle-run"
    await runs.create_run(RunRecord(run_id=run_id, agent_id="a", source="test"), [])
    await runs.add_events(
        run_id, [ToolCallEvent(run_id=run_id, id="000000-b0000", call_id="c0", tool_name="t")]
    )
    run = await runs.get_run(run_id)
    assert run is not None
    runs.runs[run_id] = run.model_copy(
        update={
            "status": RunStatus.WAITING_TOOLS,
            "seq": 1,
            "pending": [PendingItem(kind="tool_call", id="x")],
        }
    )
    calls: list[str] = []
    events, get_run = runs.events, runs.get_run

    async def counted_events(run_id: str, *, after: str | None = None) -> Any:
        calls.append("events")
        return await events(run_id, after=after)

    async def counted_get_run(run_id: str) -> Any:
        calls.append("run")
        return await get_run(run_id)

    runs.events, runs.get_run = counted_events, counted_get_run  # type: ignore[method-assign]
    settings = HubSettings()
    feed = RunFeed(EventHub(pump.deps, settings), run_id, None)
    subscriber = Subscription(feed, None, 100)
    feed.subscribers.add(subscriber)
    interval = await feed._tick(settings.poll_min_seconds)
    assert subscriber.queue.get_nowait().id == "000000-b0000"  # type: ignore[union-attr]
    assert interval == settings.poll_min_seconds
    interval = await feed._tick(interval)  # nothing new: the run document says tools run
    assert feed.mode == "waiting" and calls == ["events", "events", "run"]
    calls.clear()
    intervals = []
    for _ in range(8):
        interval = await feed._tick(interval)
        intervals.append(interval)
    assert calls == ["run"] * 8  # no events query while waiting
    assert intervals == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    result = ContentChunk(run_id=run_id, seq=1, id="000001-a0000", chunk="done")
    await runs.add_events(run_id, [result])
    waiting = runs.runs[run_id]
    later = waiting.updated_at.replace(year=waiting.updated_at.year + 1)
    runs.runs[run_id] = waiting.model_copy(
        update={"status": RunStatus.RUNNING, "pending": [], "updated_at": later}
    )
    calls.clear()
    assert await feed._tick(interval) == settings.poll_min_seconds and feed.mode == "live"
    await feed._tick(settings.poll_min_seconds)
    assert calls == ["run", "events"] and subscriber.queue.get_nowait() == result


# ---- GraphQL ---------------------------------------------------------------------------------


async def test_graphql_subscription_streams_in_order_and_leaves_the_hub_on_disconnect(
    stack: Stack, app: ASGIApp
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    carrying = asyncio.create_task(pump.run())
    received: list[dict[str, Any]] = []
    async with GraphQLSession(app) as session:
        assert (await session.init({"Authorization": f"Bearer {TOKEN}"}))[
            "type"
        ] == "websocket.send"
        await session.subscribe(run_id)
        async for event in session.events():
            received.append(event)
            if event["eventType"] == "content_chunk":
                assert hub_for(pump.deps).subscriber_count(run_id) == 1
                break  # the client goes away mid-reply
    assert hub_for(pump.deps).subscriber_count(run_id) == 0
    assert run_id not in hub_for(pump.deps).feeds
    await carrying
    stored = await stored_events(clients["api"], run_id)
    assert [e["id"] for e in received] == [e["id"] for e in stored[: len(received)]]
    assert [e["eventType"] for e in received][:4] == [
        "thinking",
        "tool_call",
        "thinking",
        "tool_result",
    ]
    assert all(e["executionId"] == run_id for e in received)
    # the whole run, after the fact, over a token in the payload: it ends with the run
    async with GraphQLSession(app) as session:
        await session.init({"token": TOKEN})
        await session.subscribe(run_id)
        whole = [event async for event in session.events()]
    assert [e["id"] for e in whole] == [e["id"] for e in stored]
    assert whole[-1]["eventType"] == "completed" and whole[-1]["status"] == "SATISFIED"
    assert hub_for(pump.deps).subscriber_count() == 0


async def test_graphql_refuses_a_connection_init_without_a_valid_token(
    stack: Stack, app: ASGIApp
) -> None:
    for payload in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"token": "nope"}):
        async with GraphQLSession(app) as session:
            closed = await session.init(payload)
        assert (closed["type"], closed["code"]) == ("websocket.close", 4403), payload
    _, pump = stack
    assert hub_for(pump.deps).subscriber_count() == 0


async def test_graphql_over_http_queries_starts_and_cancels_with_the_bearer_token(
    stack: Stack, app: ASGIApp
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    async def gql(query: str, **variables: Any) -> dict[str, Any]:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return dict(body["data"])

    assert (await gql("{ agents { id model } }"))["agents"] == [
        {"id": "slow", "model": "scripted/scripted-slow"}
    ]
    runs = await gql("query($a: String) { runs(agentId: $a) { runId status } }", a="slow")
    assert runs["runs"] == [{"runId": run_id, "status": "queued"}]
    started = await gql(
        'mutation { startRun(agentId: "slow", message: "again", runId: "gql-run") { runId created } }'
    )
    assert started["startRun"] == {"runId": "gql-run", "created": True}
    cancelled = await gql('mutation { cancelRun(runId: "gql-run") { status exit } }')
    assert cancelled["cancelRun"] == {"status": "finished", "exit": "CANCELLED"}
    await pump.run()
    one = await gql(
        "query($r: String!) { run(runId: $r) { status exit } messages(runId: $r) { role content }"
        " events(runId: $r) { id eventType } }",
        r=run_id,
    )
    assert one["run"] == {"status": "finished", "exit": "SATISFIED"}
    assert [m["role"] for m in one["messages"]][:2] == ["system", "user"]
    stored = await stored_events(clients["api"], run_id)
    assert [(e["id"], e["eventType"]) for e in one["events"]] == [
        (e["id"], e["type"]) for e in stored
    ]
    anonymous = await http.post(
        "/graphql", json={"query": "{ agents { id } }"}, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401


# ---- seed 004's paths, and every path alike --------------------------------------------------


async def test_every_path_delivers_the_same_events_in_the_same_order(
    stack: Stack, app: ASGIApp
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    client = streaming_client(app)
    hub = hub_for(pump.deps)
    subscribed = asyncio.Event()

    async def over_sse(path: str) -> list[dict[str, Any]]:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            return [(data, kind) async for _, kind, data in sse_events(response)]  # type: ignore[misc]

    async def over_agent_ws() -> list[dict[str, Any]]:
        async with WebSocketSession(app, f"/agent-stream/{run_id}", f"token={TOKEN}") as ws:
            await subscribed.wait()
            return [event async for event in ws.events()]

    async def over_graphql() -> list[dict[str, Any]]:
        async with GraphQLSession(app) as session:
            await session.init({"Authorization": f"Bearer {TOKEN}"})
            await session.subscribe(run_id)
            return [event async for event in session.events()]

    readers = [
        asyncio.create_task(over_sse(f"/runs/{run_id}/events/stream")),
        asyncio.create_task(over_sse(f"/agent-stream/{run_id}")),
        asyncio.create_task(over_agent_ws()),
        asyncio.create_task(over_graphql()),
    ]
    while hub.subscriber_count(run_id) < 4:
        await asyncio.sleep(0.01)
    assert len(hub.feeds) == 1  # four streams, one feed
    subscribed.set()
    await pump.run()
    runs_sse, agent_sse, agent_ws, graphql = await asyncio.gather(*readers)
    stored = await stored_events(clients["api"], run_id)
    ids = [e["id"] for e in stored]
    assert [data["id"] for data, _ in runs_sse] == ids
    assert all(kind == data["type"] for data, kind in runs_sse)
    assert [data["id"] for data, _ in agent_sse] == ids
    assert all(kind == "" for _, kind in agent_sse)  # unnamed: EventSource.onmessage sees them
    agent_sse_json = [data for data, _ in agent_sse]
    assert agent_ws == agent_sse_json
    assert [e["id"] for e in graphql] == ids
    fields = ("executionId", "eventType", "content", "status", "toolName", "error")
    assert [{f: e[f] for f in fields} for e in graphql] == [
        {f: e[f] for f in fields} for e in agent_ws
    ]
    assert [e["eventType"] for e in agent_ws] == [e["type"] for e in stored]
    chunks = "".join(e["content"] for e in agent_ws if e["eventType"] == "content_chunk")
    completed = agent_ws[-1]
    assert completed["eventType"] == "completed" and completed["final_response"] == chunks
    assert hub.subscriber_count() == 0


async def test_agent_stream_refuses_bad_tokens_and_unknown_runs(stack: Stack, app: ASGIApp) -> None:
    async with WebSocketSession(app, "/agent-stream/x", "token=wrong-token-0123456789") as ws:
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4401
    async with WebSocketSession(app, "/agent-stream/nope", f"token={TOKEN}") as ws:
        closed = await ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 4404
    client = streaming_client(app)
    assert (await client.get("/agent-stream/nope")).status_code == 404
    assert (await client.get("/agent-stream/x", headers={"Authorization": ""})).status_code == 401


async def test_openapi_lists_the_new_http_paths_and_graphql_refuses_bad_bodies_with_4xx(
    stack: Stack, app: ASGIApp
) -> None:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://svc",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/agent-stream/{run_id}", "/graphql", "/runs/{run_id}/events/ws"} <= set(paths)
    for path in ("/agent-stream/{run_id}", "/runs/{run_id}/events/stream"):
        assert "token" in {p["name"] for p in paths[path]["get"]["parameters"]}
    bodies = (b"not json", b"[]", b"null", b"1", b'"x"', b'{"query": 5}', b'{"query": "{ nope }"}')
    for body in bodies:
        response = await http.post(
            "/graphql", content=body, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500 or (
            response.status_code == 200 and response.json().get("errors")
        ), (body, response.status_code, response.text)


async def test_sse_and_websocket_clients_that_leave_mid_stream_leave_the_hub(
    stack: Stack, app: ASGIApp
) -> None:
    clients, pump = stack
    run_id = await start_slow_run(clients, pump)
    carrying = asyncio.create_task(pump.run())
    hub = hub_for(pump.deps)
    client = streaming_client(app)
    async with client.stream("GET", f"/agent-stream/{run_id}") as response:
        async for _, _, data in sse_events(response):
            assert hub.subscriber_count(run_id) == 1
            if data["eventType"] == "content_chunk":
                break
    assert hub.subscriber_count(run_id) == 0
    async with WebSocketSession(app, f"/runs/{run_id}/events/ws", f"token={TOKEN}") as ws:
        async for event in ws.events():
            assert hub.subscriber_count(run_id) == 1
            if event["type"] == "content_chunk":
                break
    assert hub.subscriber_count(run_id) == 0 and run_id not in hub.feeds
    await carrying


async def test_graphql_mutation_over_the_websocket_is_the_same_principal(
    stack: Stack, app: ASGIApp
) -> None:
    clients, pump = stack
    await start_slow_run(clients, pump)  # registers the agent
    async with GraphQLSession(app) as session:
        await session.init({"token": TOKEN})
        mutation = (
            'mutation { startRun(agentId: "slow", message: "hi", runId: "ws-run") { runId } }'
        )
        await session.send({"id": "m", "type": "subscribe", "payload": {"query": mutation}})
        result = await session.receive_json()
        assert result["payload"] == {"data": {"startRun": {"runId": "ws-run"}}}, result
    run = (await clients["api"].get("/runs/ws-run")).json()
    assert run["principal"] == "tester"


async def test_graphql_lists_and_decides_approvals(stack: Stack, app: ASGIApp) -> None:
    clients, pump = stack
    agent = scripted_agent(
        "gql-refunds",
        model={
            "provider": "scripted",
            "name": "scripted-refunds",
            "script": [
                {
                    "tool_calls": [
                        {"name": "refund_order", "arguments": {"order_id": "A", "amount_eur": 5}}
                    ]
                },
                {"content": "refunded"},
            ],
        },
        tools=["refund_order"],
        approval={"threshold": "high"},
    )
    assert (await clients["api"].post("/agents", json=agent)).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": "gql-refunds", "message": "go"})
    run_id = started.json()["run_id"]
    await pump.run()
    gql = graphql_http(app)
    inbox = await gql('{ approvals(status: "pending") { runId approvalId tool status risk } }')
    assert inbox["data"]["approvals"] == [
        {
            "runId": run_id,
            "approvalId": "000000-000",
            "tool": "refund_order",
            "status": "pending",
            "risk": "high",
        }
    ]
    decide = (
        'mutation($r: String!) { decideApproval(runId: $r, approvalId: "000000-000", '
        'decision: "approve", reason: "ok") { status decidedBy } }'
    )
    decided = await gql(decide, r=run_id)
    assert decided["data"]["decideApproval"] == {"status": "approved", "decidedBy": ["tester"]}
    again = await gql(decide, r=run_id)
    assert "409: approval 000000-000 is already approved" in again["errors"][0]["message"]
    await pump.run()
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "SATISFIED"
