"""Conversations through the services (memory backend): a run names a ``conversation_id``, starts
from its earlier turns and appends its own; one run at a time (409 while one runs)."""

from __future__ import annotations

import httpx

from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


def chatty() -> dict:
    return scripted_agent(
        "chatty",
        model={"provider": "scripted", "name": "s", "script": [{"content": "noted"}]},
        tools=[],
    )


async def start(
    clients: dict[str, httpx.AsyncClient], message: str, conversation: str
) -> httpx.Response:
    return await clients["api"].post(
        "/runs", json={"agent_id": "chatty", "message": message, "conversation_id": conversation}
    )


async def test_a_run_continues_its_conversation_and_appends_to_it(stack: Stack) -> None:
    clients, pump = stack
    assert (await clients["api"].post("/agents", json=chatty())).status_code == 201
    first = (await start(clients, "My favorite color is blue.", "conv-1")).json()["run_id"]
    await pump.run()
    second = (await start(clients, "What was my favorite color?", "conv-1")).json()["run_id"]
    await pump.run()
    transcript = (await clients["api"].get(f"/runs/{second}/messages")).json()["messages"]
    assert [(m["role"], m.get("content")) for m in transcript[1:4]] == [
        ("user", "My favorite color is blue."),
        ("assistant", "noted"),
        ("user", "What was my favorite color?"),
    ]
    conversation = (await clients["api"].get("/conversations/conv-1")).json()
    assert conversation["runs"] == [first, second] and conversation["active_run_id"] is None
    assert [m["content"] for m in conversation["messages"]] == [
        "My favorite color is blue.",
        "noted",
        "What was my favorite color?",
        "noted",
    ]
    assert (await clients["api"].get("/conversations/nope")).status_code == 404
    await start(clients, "Another topic.", "conv-2")
    await pump.run()
    listed = (await clients["api"].get("/agents/chatty/conversations")).json()["conversations"]
    assert [c["conversation_id"] for c in listed] == ["conv-2", "conv-1"]
    assert (await clients["api"].get("/agents/nobody/conversations")).json()["conversations"] == []


async def test_two_runs_of_one_conversation_at_once_are_refused(stack: Stack) -> None:
    clients, pump = stack
    assert (await clients["api"].post("/agents", json=chatty())).status_code == 201
    holder = (await start(clients, "one", "conv-2")).json()["run_id"]
    busy = await start(clients, "two", "conv-2")
    assert busy.status_code == 409
    assert busy.json()["active_run_id"] == holder and "busy" in busy.json()["error"]
    await pump.run()
    again = await start(clients, "two", "conv-2")
    assert again.status_code == 202, again.text
    await pump.run()
    conversation = (await clients["api"].get("/conversations/conv-2")).json()
    assert conversation["message_count"] == 4
    bad = await start(clients, "x", "has/slash")
    assert bad.status_code == 422
