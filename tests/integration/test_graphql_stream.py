"""GraphQL subscriptions and seed 004's ``/agent-stream/{id}`` on the local stack: uvicorn with
the ``websockets`` server, Firestore on the emulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from cloudagents.client import parse_sse
from cloudagents.local.stack import StackState
from tests.integration.conftest import register, wait_for_run
from tests.integration.test_streaming import slow_agent, start

pytestmark = pytest.mark.integration

STREAM = (
    "subscription S($id: String!) { agentExecutionStream(executionId: $id) "
    "{ id executionId eventType content status toolName error timestamp } }"
)


async def graphql_events(url: str, token: str, run_id: str) -> list[dict[str, Any]]:
    events = []
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": STREAM, "variables": {"id": run_id}},
                }
            )
        )
        while (message := json.loads(await socket.recv()))["type"] == "next":
            events.append(message["payload"]["data"]["agentExecutionStream"])
        assert message == {"id": "1", "type": "complete"}
    return events


async def agent_stream_ws(url: str) -> list[dict[str, Any]]:
    async with websockets.connect(url) as socket:
        return [json.loads(raw) async for raw in socket]


def test_graphql_agent_stream_and_sse_agree_on_the_local_stack(
    api: httpx.Client, stack_state: StackState
) -> None:
    register(api, slow_agent("gql-slow"))
    run_id = start(api, "gql-slow")
    ws_base = stack_state.api_url.replace("http://", "ws://")

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        graphql, direct = await asyncio.gather(
            graphql_events(f"{ws_base}/graphql", stack_state.api_token, run_id),
            agent_stream_ws(f"{ws_base}/agent-stream/{run_id}?token={stack_state.api_token}"),
        )
        return graphql, direct

    graphql, direct = asyncio.run(both())
    with api.stream("GET", f"/agent-stream/{run_id}") as response:
        assert response.status_code == 200
        sse = [
            json.loads(data) for kind, data in parse_sse(response.iter_lines()) if kind == "event"
        ]
    stored = api.get(f"/runs/{run_id}/events").json()["events"]
    ids = [e["id"] for e in stored]
    assert [e["id"] for e in graphql] == ids and [e["id"] for e in direct] == ids
    assert sse == direct
    assert direct[-1]["eventType"] == "completed" and direct[-1]["final_response"]
    assert [e["eventType"] for e in graphql] == [e["type"] for e in stored]
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"


def test_graphql_refuses_an_unauthenticated_connection_init(stack_state: StackState) -> None:
    url = stack_state.api_url.replace("http://", "ws://") + "/graphql"

    async def attempt() -> int | None:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(attempt()) == 4403
    response = httpx.post(stack_state.api_url + "/graphql", json={"query": "{ agents { id } }"})
    assert response.status_code == 401
