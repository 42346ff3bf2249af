"""Records from a newer release are retried, never dead-lettered (issue 13, item 6).

During a rolling deploy an old instance can receive a message the new release wrote. It answers
503 (Pub/Sub and Cloud Tasks deliver again, until an instance of the new release takes it) and
records nothing; the same message at the current version is applied (or, when it can never be
applied, dead-lettered) as before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudagents.adapters.memory.messaging import PublishedMessage
from cloudagents.adapters.memory.stores import InMemoryDeadLetterStore
from cloudagents.domain.intents import IntentionMessage
from tests.services.conftest import Pump, push_body, scripted_agent

Stack = tuple[dict[str, Any], Pump]

# (service, push path, subscription, body at the current version)
PUSHES = [
    (
        "run_executor",
        "/pubsub/intents",
        "agents-run-executor-intents",
        IntentionMessage.for_run(run_id="sv-run", agent_id="calc", message="6*7").model_dump(
            mode="json"
        ),
    ),
    ("run_executor", "/pubsub/steps", "agents-run-executor-steps", {"run_id": "ghost", "seq": 0}),
    ("tool_invoker", "/pubsub/tools", "agents-tool-invoker", {"run_id": "ghost", "seq": 0, "index": 0}),
    ("handoff_broker", "/pubsub/handoff", "agents-handoff-broker", {"offer_id": "ghost-offer"}),
    ("context_snapshotter", "/pubsub/snapshots", "agents-context-snapshotter", {"run_id": "ghost", "seq": 0}),
]  # fmt: skip


def letters(pump: Pump) -> InMemoryDeadLetterStore:
    store = pump.deps.dead_letters
    assert isinstance(store, InMemoryDeadLetterStore)
    return store


@pytest.mark.parametrize(("service", "path", "subscription", "body"), PUSHES)
async def test_a_push_from_a_newer_release_is_retried_not_dead_lettered(
    stack: Stack, service: str, path: str, subscription: str, body: dict[str, Any]
) -> None:
    clients, pump = stack
    await clients["api"].post("/agents", json=scripted_agent())
    newer = PublishedMessage("t", json.dumps({**body, "schema_version": 2}).encode(), {}, "new-1")
    response = await clients[service].post(path, json=push_body(newer, subscription))
    assert response.status_code == 503, response.json()
    assert "newer release" in response.json()["error"]
    assert letters(pump).letters == {}
    assert await pump.deps.runs.get_run("sv-run") is None

    # The same body as this release writes it: applied, or dead-lettered when it never can be.
    current = PublishedMessage("t", json.dumps({**body, "schema_version": 1}).encode(), {}, "cur-1")
    response = await clients[service].post(path, json=push_body(current, subscription))
    assert response.status_code == 200, response.json()
    if path == "/pubsub/intents":
        assert await pump.deps.runs.get_run("sv-run") is not None
    else:
        assert response.json()["status"] == "dead-lettered"
        assert list(letters(pump).letters) == [f"{subscription}-cur-1"]


async def test_a_wake_up_task_from_a_newer_release_is_retried(stack: Stack) -> None:
    clients, _ = stack
    body = {"run_id": "ghost", "seq": 0, "schema_version": 2}
    response = await clients["run_executor"].post("/tasks/wake", json=body)
    assert response.status_code == 503, response.json()
    assert "newer release" in response.json()["reason"]
    response = await clients["run_executor"].post("/tasks/wake", json={**body, "schema_version": 1})
    assert response.status_code < 500, response.json()


async def test_every_wire_record_carries_its_schema_version(stack: Stack) -> None:
    """What the services publish, and the events and transcript they store, say their version."""
    clients, pump = stack
    await clients["api"].post("/agents", json=scripted_agent())
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7"})
    run_id = started.json()["run_id"]
    await pump.run()
    published = [json.loads(m.data) for m in pump.bus.published]
    assert published and all(m.get("schema_version") == 1 for m in published), published
    assert {m.topic.rsplit("-", 1)[-1] for m in pump.bus.published} >= {"agents", "steps", "tools"}
    events = (await clients["api"].get(f"/runs/{run_id}/events")).json()["events"]
    assert events and all(e["schema_version"] == 1 for e in events)
    transcript = await pump.deps.runs.messages(run_id)
    assert transcript and all(m.model_dump()["schema_version"] == 1 for m in transcript)
