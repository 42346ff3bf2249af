"""A run's events over Server-Sent Events from the api process, on the emulators."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloudagents.client import parse_sse
from cloudagents.local.stack import StackState
from tests.integration.conftest import register, wait_for_run

pytestmark = pytest.mark.integration

REPLY = "Six times seven is forty-two; the calculator agrees with me on that, to the digit. " * 2


def slow_agent(agent_id: str) -> dict[str, Any]:
    """A tool call, then a ~170-character reply streamed in 16-character pieces over 1.2 s."""
    return {
        "id": agent_id,
        "instructions": "You do arithmetic with the calculator.",
        "model": {
            "provider": "scripted",
            "name": "scripted-slow",
            "script": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                {"content": REPLY, "delay_seconds": 1.2},
            ],
        },
        "tools": ["calculator"],
    }


def sse(api: httpx.Client, run_id: str, after: str | None = None) -> Iterator[dict[str, Any]]:
    headers = {"Accept": "text/event-stream"}
    if after:
        headers["Last-Event-ID"] = after
    with api.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for kind, data in parse_sse(response.iter_lines()):
            if kind == "event":
                yield json.loads(data)


def start(api: httpx.Client, agent_id: str) -> str:
    started = api.post("/runs", json={"agent_id": agent_id, "message": "What is 6*7?"})
    assert started.status_code == 202, started.text
    return str(started.json()["run_id"])


def test_sse_follows_a_run_started_over_http_to_completed(api: httpx.Client) -> None:
    register(api, slow_agent("sse-slow"))
    run_id = start(api, "sse-slow")
    received: list[dict[str, Any]] = []
    finished_at_first_chunk = None
    for event in sse(api, run_id):
        received.append(event)
        if event["type"] == "content_chunk" and finished_at_first_chunk is None:
            finished_at_first_chunk = api.get(f"/runs/{run_id}").json()["result"] is not None
    assert finished_at_first_chunk is False  # the reply was still being written
    assert received[-1]["type"] == "completed" and received[-1]["exit"] == "SATISFIED"
    assert received == api.get(f"/runs/{run_id}/events").json()["events"]
    assert "".join(e["chunk"] for e in received if e["type"] == "content_chunk") == REPLY
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"


def test_sse_reconnect_mid_stream_loses_and_repeats_nothing(api: httpx.Client) -> None:
    register(api, slow_agent("sse-resume"))
    run_id = start(api, "sse-resume")
    first: list[dict[str, Any]] = []
    for event in sse(api, run_id):
        first.append(event)
        if event["type"] == "content_chunk":
            break  # drop the connection mid-reply
    assert api.get(f"/runs/{run_id}").json()["result"] is None
    time.sleep(0.3)  # events keep being written while nobody listens
    second = list(sse(api, run_id, after=first[-1]["id"]))
    full = api.get(f"/runs/{run_id}/events").json()["events"]
    assert first + second == full
    assert len({e["id"] for e in full}) == len(full)
    assert second[-1]["type"] == "completed"
    assert any(e["type"] == "content_chunk" for e in second)


def test_sse_needs_the_token(api: httpx.Client) -> None:
    url = str(api.base_url).rstrip("/") + "/runs/anything/events/stream"
    response = httpx.get(url, headers={"Accept": "text/event-stream"})
    assert response.status_code == 401


def test_websocket_on_the_local_stack_follows_a_run(
    api: httpx.Client, stack_state: StackState
) -> None:
    """The api the local stack (and the image) serves has the WebSocket route too."""
    import asyncio
    import json as jsonlib

    import websockets

    register(api, slow_agent("ws-agent"))
    run_id = api.post("/runs", json={"agent_id": "ws-agent", "message": "stream please"}).json()[
        "run_id"
    ]
    url = (
        stack_state.api_url.replace("http://", "ws://")
        + f"/runs/{run_id}/events/ws?token={stack_state.api_token}"
    )

    async def collect() -> list[dict[str, object]]:
        events = []
        async with websockets.connect(url) as socket:
            async for raw in socket:
                events.append(jsonlib.loads(raw))
        return events

    events = asyncio.run(collect())
    assert events[-1]["type"] == "completed"
    assert any(e["type"] == "content_chunk" for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
