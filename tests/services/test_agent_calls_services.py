"""Agent-to-agent calls through the services (memory backend): the child starts from an intent,
its finishing commit wakes the caller, ``GET /runs/{id}/tree`` shows the tree, and cancelling a
caller cancels the calls below it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.services.conftest import Pump, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


def peer(agent_id: str, *turns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return scripted_agent(
        agent_id,
        model={"provider": "scripted", "name": "s", "script": list(turns)},
        tools=[],
        **extra,
    )


def caller(*peers: str) -> dict[str, Any]:
    return peer(
        "boss",
        {
            "tool_calls": [
                {"name": f"invoke_{p}", "arguments": {"request": f"ask {p}"}} for p in peers
            ]
        },
        {"content": "composed"},
        allowed_peers=list(peers),
    )


async def register(clients: dict[str, httpx.AsyncClient], *definitions: dict[str, Any]) -> None:
    for definition in definitions:
        answer = await clients["api"].post("/agents", json=definition)
        assert answer.status_code == 201, answer.text


async def test_calls_run_as_children_and_the_tree_shows_them(stack: Stack) -> None:
    clients, pump = stack
    await register(
        clients,
        peer("alpha", {"content": "alpha says 1"}),
        peer("beta", {"content": "beta says 2"}),
        caller("alpha", "beta"),
    )
    started = await clients["api"].post("/runs", json={"agent_id": "boss", "message": "go"})
    run_id = started.json()["run_id"]
    await pump.run()
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "SATISFIED" and run["progress"]["tool_calls"] == 2
    transcript = (await clients["api"].get(f"/runs/{run_id}/messages")).json()["messages"]
    assert [m["content"] for m in transcript if m["role"] == "tool"] == [
        "alpha says 1",
        "beta says 2",
    ]
    tree = (await clients["api"].get(f"/runs/{run_id}/tree")).json()
    assert tree["runs"] == 3 and tree["agent_id"] == "boss"
    assert [(c["agent_id"], c["how"], c["exit"], c["call_depth"]) for c in tree["children"]] == [
        ("alpha", "call", "SATISFIED", 1),
        ("beta", "call", "SATISFIED", 1),
    ]
    assert (await clients["api"].get("/runs/nope/tree")).status_code == 404
    events = (await clients["api"].get(f"/runs/{run_id}/events?tree=1")).json()["events"]
    by_run = {e["run_id"] for e in events}
    assert by_run == {run_id, *(c["run_id"] for c in tree["children"])}
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    own = (await clients["api"].get(f"/runs/{run_id}/events")).json()["events"]
    assert {e["run_id"] for e in own} == {run_id}


async def test_cancelling_the_caller_cancels_the_call_below_it(stack: Stack) -> None:
    clients, pump = stack
    waiting = peer(
        "refunder",
        {"tool_calls": [{"name": "refund_order", "arguments": {"order_id": "A", "amount_eur": 1}}]},
        {"content": "refunded"},
        approval={"threshold": "high"},
    )
    waiting["tools"] = ["refund_order"]
    await register(clients, waiting, caller("refunder"))
    started = await clients["api"].post("/runs", json={"agent_id": "boss", "message": "go"})
    run_id = started.json()["run_id"]
    await pump.run()
    tree = (await clients["api"].get(f"/runs/{run_id}/tree")).json()
    (child,) = tree["children"]
    assert (tree["status"], child["status"]) == ("waiting_tools", "waiting_approval")
    cancelled = await clients["api"].post(f"/runs/{run_id}/cancel")
    assert cancelled.json()["exit"] == "CANCELLED"
    await pump.run()
    below = (await clients["api"].get(f"/runs/{child['run_id']}")).json()
    assert below["result"]["exit"] == "CANCELLED"
    assert "its caller" in below["result"]["payload"]["reason"]
