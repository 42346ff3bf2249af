"""Seed 004's classification place agent through the services (in-memory backend): trigger
conditions, the schedule's Cloud Tasks (a duplicate task does nothing, ``max_executions``),
``llm_config`` on the wire, ``auto_transition`` after success, interval schedules."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cloudagents.adapters.memory.messaging import InMemoryTaskQueue
from tests.fakes.llm_api_servers import fake_llm_server
from tests.services.conftest import Pump

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transitions" / "classification.yaml"
PATH = "/tasks/place-agent"


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def place_tasks(pump: Pump) -> list[Any]:
    tasks = pump.deps.tasks
    assert isinstance(tasks, InMemoryTaskQueue)
    return [t for t in tasks.tasks if t.url.endswith(PATH)]


async def run_task(clients: dict[str, httpx.AsyncClient], task: Any) -> dict[str, Any]:
    response = await clients["run_executor"].post(PATH, content=task.body)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def register(api: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    for agent in spec["agents"]:
        assert (await api.post("/agents", json=agent)).status_code == 201
    for workflow in spec["workflows"]:
        response = await api.post("/transition-workflows", json=workflow)
        assert response.status_code == 201, response.json()


async def new_item(api: httpx.AsyncClient, token_id: str, **metadata: Any) -> None:
    body = {
        "workflow_id": "content-intake",
        "token_id": token_id,
        "data": {"content": "Our Q3 revenue grew 12%."},
        "metadata": {"type": "article", "status": "unclassified", **metadata},
    }
    assert (await api.post("/tokens", json=body)).status_code == 201


async def test_classification_place_agent_then_auto_transition(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    with fake_llm_server() as server:
        # The classifier on an OpenAI-compatible local server: what llm_config puts on the wire.
        monkeypatch.setenv("FAKE_KEY", "k")
        spec["agents"][0]["model"] = {
            "provider": "openai",
            "name": "classifier-model",
            "base_url": server.openai_base_url,
            "api_key_env": "FAKE_KEY",
        }
        server.reply_text(json.dumps({"category": "finance", "confidence_score": 9}))
        await register(api, spec)
        await new_item(api, "item-1")
        [task] = place_tasks(pump)
        token = (await api.get("/tokens/item-1")).json()
        delay = task.at - datetime.fromisoformat(token["created_at"])
        assert timedelta(seconds=5) <= delay < timedelta(seconds=6)
        assert token["place"] == "pending_classification"
        # The task (after initial_delay_seconds) runs once; its duplicate does nothing.
        assert (await run_task(clients, task))["status"] == "started"
        assert (await run_task(clients, task))["status"] in ("duplicate", "stale")
        await pump.run()
        body = server.last_request.body
    assert body["temperature"] == 0.1 and body["max_tokens"] == 200
    assert body["top_p"] == 0.9 and body["stop"] == ["CLASSIFICATION COMPLETE"]
    token = (await api.get("/tokens/item-1")).json()
    assert token["data"]["classification"] == "finance" and token["data"]["confidence"] == 9
    assert token["metadata"]["classifier"] == "content-classifier"
    assert token["place"] == "categorized", token
    assert [h["transition_id"] for h in token["history"]] == ["move_to_categorized"]
    executions = (await api.get("/tokens/item-1/executions")).json()["executions"]
    assert [(e["place_id"], e["status"]) for e in executions] == [
        ("pending_classification", "succeeded")
    ]
    # max_executions 1: a later task for execution 2 does nothing either.
    assert len(place_tasks(pump)) == 1


async def test_trigger_conditions_and_interval_schedule(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    place = spec["workflows"][0]["place_agents"][0]
    place["auto_transition"] = None
    place["schedule"] = {"initial_delay_seconds": 0, "interval_seconds": 60, "max_executions": 2}
    await register(api, spec)
    await new_item(api, "item-classified", status="classified")
    # The same request again (a client's retry) finds the token; a different one is refused.
    again = {
        "workflow_id": "content-intake",
        "token_id": "item-classified",
        "data": {"content": "Our Q3 revenue grew 12%."},
        "metadata": {"type": "article", "status": "classified"},
    }
    assert (await api.post("/tokens", json=again)).status_code == 200
    other = {**again, "data": {"content": "else"}}
    assert (await api.post("/tokens", json=other)).status_code == 409
    task, duplicate = place_tasks(pump)  # scheduled by both requests: the same task
    assert task.body == duplicate.body
    assert (await run_task(clients, task))["status"] == "conditions-false"
    assert (await api.get("/tokens/item-classified/executions")).json()["executions"] == []
    await new_item(api, "item-2")
    task = place_tasks(pump)[-1]
    assert (await run_task(clients, task))["status"] == "started"
    await pump.run()
    tasks = [t for t in place_tasks(pump) if b'"item-2"' in t.body]
    assert [json.loads(t.body)["n"] for t in tasks] == [1, 2]
    assert (await run_task(clients, tasks[1]))["status"] == "started"
    await pump.run()
    tasks = [t for t in place_tasks(pump) if b'"item-2"' in t.body]
    assert [json.loads(t.body)["n"] for t in tasks] == [1, 2]  # max_executions: no third
    executions = (await api.get("/tokens/item-2/executions")).json()["executions"]
    assert [e["status"] for e in executions] == ["succeeded", "succeeded"]
    token = (await api.get("/tokens/item-2")).json()
    assert token["place"] == "pending_classification" and token["version"] == 5
    assert (await run_task(clients, tasks[1]))["status"] == "duplicate"


async def test_a_token_that_changes_in_its_place_is_checked_again(stack: Stack) -> None:
    """Seed 004's "token enters or exists in the place": a place agent whose conditions were
    false on entry runs once another place agent's output makes them true."""
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    workflow = spec["workflows"][0]
    first = workflow["place_agents"][0]
    first["auto_transition"] = None
    first["schedule"] = {"initial_delay_seconds": 0, "max_executions": 1}
    second = copy.deepcopy(first)
    second["trigger_conditions"] = [{"field_exists": "data.classification"}]
    second["output_mapping"] = {"data.second_opinion": "category"}
    workflow["place_agents"].append(second)
    await register(api, spec)
    await new_item(api, "item-twice")
    entry = [t for t in place_tasks(pump) if b'"item-twice"' in t.body]
    assert sorted(json.loads(t.body)["index"] for t in entry) == [0, 1]
    statuses = {json.loads(t.body)["index"]: (await run_task(clients, t))["status"] for t in entry}
    assert statuses == {0: "started", 1: "conditions-false"}
    await pump.run()
    rechecks = [t for t in place_tasks(pump) if b'"item-twice"' in t.body][len(entry) :]
    assert [json.loads(t.body)["index"] for t in rechecks] == [1]
    assert (await run_task(clients, rechecks[0]))["status"] == "started"
    assert (await run_task(clients, rechecks[0]))["status"] in ("duplicate", "busy", "stale")
    await pump.run()
    token = (await api.get("/tokens/item-twice")).json()
    assert token["data"]["classification"] == "finance"
    assert token["data"]["second_opinion"] == "finance"
    executions = (await api.get("/tokens/item-twice/executions")).json()["executions"]
    assert [(e["place_agent"], e["status"]) for e in executions] == [
        (0, "succeeded"),
        (1, "succeeded"),
    ]
    # The second agent's update re-checks the first, which has run this visit: nothing.
    later = [t for t in place_tasks(pump) if b'"item-twice"' in t.body][len(entry) + 1 :]
    assert [json.loads(t.body)["index"] for t in later] == [0]
    assert (await run_task(clients, later[0]))["status"] == "duplicate"


async def test_a_place_agent_added_later_runs_on_the_tokens_already_in_its_place(
    stack: Stack,
) -> None:
    """Seed 004's "enters or exists in": the workflow defined again with a place agent new to a
    place schedules it for the token already sitting there; the registration repeated, and
    again after the execution, runs it no second time (counted per token)."""
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    workflow = spec["workflows"][0]
    agent = workflow["place_agents"][0]
    agent["auto_transition"] = None
    agent["schedule"] = {"initial_delay_seconds": 0, "max_executions": 1}
    workflow["place_agents"] = []
    await register(api, spec)
    await new_item(api, "item-waiting")
    elsewhere = {"workflow_id": "content-intake", "token_id": "item-done", "place": "categorized"}
    assert (await api.post("/tokens", json=elsewhere)).status_code == 201
    assert place_tasks(pump) == []
    workflow["place_agents"] = [agent]
    for _ in range(2):  # the registration repeated (a client's retry)
        response = await api.post("/transition-workflows", json=workflow)
        assert response.status_code == 201, response.json()
    task, again = place_tasks(pump)
    assert b'"item-waiting"' in task.body and (task.body, task.name) == (again.body, again.name)
    assert json.loads(task.body)["index"] == 0
    assert (await run_task(clients, task))["status"] == "started"
    assert (await run_task(clients, again))["status"] in ("duplicate", "stale")
    await pump.run()
    token = (await api.get("/tokens/item-waiting")).json()
    assert token["data"]["classification"] == "finance" and token["firing"] is None
    # Registered once more after it ran: its task finds the execution counted.
    assert (await api.post("/transition-workflows", json=workflow)).status_code == 201
    last = place_tasks(pump)[-1]
    assert b'"item-waiting"' in last.body
    assert (await run_task(clients, last))["status"] == "duplicate"
    executions = (await api.get("/tokens/item-waiting/executions")).json()["executions"]
    assert [(e["place_agent"], e["status"]) for e in executions] == [(0, "succeeded")]
    assert not [t for t in place_tasks(pump) if b'"item-done"' in t.body]


async def test_changed_trigger_conditions_are_checked_for_the_tokens_in_the_place(
    stack: Stack,
) -> None:
    """A token whose place agent's conditions were false on entry is checked again when the
    workflow is defined with other conditions (a task of its own, not the entry's)."""
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    workflow = spec["workflows"][0]
    agent = workflow["place_agents"][0]
    agent["auto_transition"] = None
    agent["schedule"] = {"initial_delay_seconds": 0, "max_executions": 1}
    await register(api, spec)
    await new_item(api, "item-classified", status="classified")
    [entry] = place_tasks(pump)
    assert (await run_task(clients, entry))["status"] == "conditions-false"
    # A change elsewhere (the agent's input mapping only) schedules nothing.
    agent["input_mapping"] = {**agent["input_mapping"], "content_type": "metadata.status"}
    assert (await api.post("/transition-workflows", json=workflow)).status_code == 201
    assert place_tasks(pump) == [entry]
    agent["trigger_conditions"] = [{"field_equals": ["metadata.status", "classified"]}]
    assert (await api.post("/transition-workflows", json=workflow)).status_code == 201
    [_, task] = place_tasks(pump)
    assert json.loads(task.body) == {**json.loads(entry.body), "version": 1}
    assert (await run_task(clients, task))["status"] == "started"
    await pump.run()
    executions = (await api.get("/tokens/item-classified/executions")).json()["executions"]
    assert [(e["place_agent"], e["status"]) for e in executions] == [(0, "succeeded")]


async def test_a_place_agent_registered_while_a_token_is_created_is_not_missed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registration lands between the token request's read of the workflow and its write
    of the token (its query of the place misses the token): the token's own scheduling reads
    the workflow again after the write and schedules the new place agent."""
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    workflow = spec["workflows"][0]
    agent = workflow["place_agents"][0]
    agent["auto_transition"] = None
    agent["schedule"] = {"initial_delay_seconds": 0, "max_executions": 1}
    workflow["place_agents"] = []
    await register(api, spec)
    store = pump.deps.transitions
    create = store.create_token

    async def registered_meanwhile(token: Any) -> bool:
        changed = {**workflow, "place_agents": [agent]}
        assert (await api.post("/transition-workflows", json=changed)).status_code == 201
        assert place_tasks(pump) == []  # its query found no token in the place yet
        return await create(token)

    monkeypatch.setattr(store, "create_token", registered_meanwhile)
    await new_item(api, "item-racing")
    [task] = place_tasks(pump)
    assert b'"item-racing"' in task.body
    assert (await run_task(clients, task))["status"] == "started"
