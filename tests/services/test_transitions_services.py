"""Seed 004's transitions through the services (in-memory backend, golden push bodies): the
document-review example end to end, redelivery, retries, ``required: false``, registration
checks."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from cloudagents.adapters.memory.messaging import InMemoryTaskQueue
from cloudagents.domain.transitions import FireIntent, FiringMessage
from tests.services.conftest import Pump

Stack = tuple[dict[str, httpx.AsyncClient], Pump]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transitions" / "document_review.yaml"


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


async def register(api: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    for agent in spec["agents"]:
        assert (await api.post("/agents", json=agent)).status_code == 201
    for workflow in spec["workflows"]:
        response = await api.post("/transition-workflows", json=workflow)
        assert response.status_code == 201, response.json()


async def new_token(api: httpx.AsyncClient, token_id: str = "doc-1", **extra: Any) -> None:
    body = {
        "workflow_id": "document-review",
        "token_id": token_id,
        "data": {"content": "Q3 revenue grew 12%."},
        "metadata": {"type": "report", "priority": "high"},
        **extra,
    }
    response = await api.post("/tokens", json=body)
    assert response.status_code == 201, response.json()


async def test_document_review_moves_the_token_with_the_mapped_output(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await register(api, example())
    await new_token(api)
    fired = await api.post("/tokens/doc-1/fire", json={"transition_id": "ai_review"})
    assert fired.status_code == 202, fired.json()
    assert fired.json()["status"] == "firing"
    execution_id = fired.json()["execution_id"]
    await pump.run()
    token = (await api.get("/tokens/doc-1")).json()
    assert token["place"] == "reviewed"
    assert token["firing"] is None and token["history_count"] == 1
    assert token["data"]["review_result"] == "APPROVE"
    assert token["data"]["review_score"] == 8
    assert token["data"]["content"] == "Q3 revenue grew 12%."
    assert token["metadata"]["reviewer"] == "content-reviewer"
    assert token["metadata"]["review_timestamp"]
    [move] = token["history"]
    assert (move["from_place"], move["to_place"], move["transition_id"]) == (
        "submitted",
        "reviewed",
        "ai_review",
    )
    assert move["execution_id"] == execution_id
    executions = (await api.get("/tokens/doc-1/executions")).json()["executions"]
    assert [(e["status"], e["attempt"], e["agent_id"]) for e in executions] == [
        ("succeeded", 1, "content-reviewer")
    ]
    assert executions[0]["input"] == {
        "document_content": "Q3 revenue grew 12%.",
        "document_type": "report",
        "priority": "high",
    }
    # The agent's run is an ordinary run: its prompt is seed 004's template, filled from the token.
    run = (await api.get(f"/runs/{execution_id}")).json()
    assert run["result"]["exit"] == "SATISFIED" and run["source"] == "transition"
    messages = (await api.get(f"/runs/{execution_id}/messages")).json()["messages"]
    assert "The document is token doc-1 of workflow document-review" in messages[0]["content"]
    prompt = messages[1]["content"]
    assert "Document Type: report" in prompt and "Priority: high" in prompt
    assert "Current Status: submitted" in prompt and "Token ID: doc-1" in prompt
    assert '"document_content": "Q3 revenue grew 12%."' in prompt
    # The next transition's rule reads the mapped output.
    approved = await api.post("/tokens/doc-1/fire", json={"transition_id": "approve"})
    assert approved.json()["status"] == "moved"
    assert (await api.get("/tokens/doc-1")).json()["place"] == "approved"
    assert all(status == 200 for _, status, _ in pump.responses)


async def test_redelivered_fire_and_completion_move_the_token_once(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await register(api, example())
    await new_token(api)
    first = await api.post("/tokens/doc-1/fire", json={"transition_id": "ai_review", "version": 1})
    again = await api.post("/tokens/doc-1/fire", json={"transition_id": "ai_review", "version": 1})
    assert first.json()["status"] == "firing" and again.json()["status"] == "stale"
    # Every message delivered twice (a redelivery of each).
    delivered = 0
    while pump.cursor < len(pump.bus.published):
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        assert await pump.deliver(message)
        assert await pump.deliver(message)
        delivered += 1
    assert delivered > 0
    completions = [r for r in pump.responses if r[0].endswith("run-executor-transitions")]
    assert [body["status"] for _, _, body in completions].count("moved") == 1
    assert {body["status"] for _, _, body in completions} == {"moved", "stale"}
    token = (await api.get("/tokens/doc-1")).json()
    assert token["place"] == "reviewed" and token["history_count"] == 1
    assert len(token["history"]) == 1
    executions = (await api.get("/tokens/doc-1/executions")).json()["executions"]
    assert len(executions) == 1
    # A completion for a firing that is over changes nothing.
    run_id = executions[0]["run_id"]
    stale = FiringMessage(run_id=run_id, token_id="doc-1", execution_id=run_id)
    await pump.deps.bus.publish("agents-transitions", stale.model_dump_json().encode(), {})
    await pump.run()
    assert (await api.get("/tokens/doc-1")).json()["version"] == token["version"]


def failing_reviewer(spec: dict[str, Any], fail_with: str, fail_times: int) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    agent = spec["agents"][0]
    agent["retry"] = {"max_attempts": 1, "backoff_seconds": 0}
    turn = dict(agent["model"]["script"][0])
    agent["model"]["script"] = [{**turn, "fail_with": fail_with, "fail_times": fail_times}]
    retry = spec["workflows"][0]["transitions"][0]["agent_execution"]["retry_config"]
    retry["backoff_seconds"] = 0
    return spec


async def test_retry_config_tries_max_attempts_on_a_listed_error(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await register(api, failing_reviewer(example(), "rate_limit", 5))
    await new_token(api, "doc-retry")
    await api.post("/tokens/doc-retry/fire", json={"transition_id": "ai_review"})
    await pump.run()
    token = (await api.get("/tokens/doc-retry")).json()
    executions = (await api.get("/tokens/doc-retry/executions")).json()["executions"]
    assert [(e["attempt"], e["status"], e["error_kind"]) for e in executions] == [
        (1, "failed", "rate_limit"),
        (2, "failed", "rate_limit"),
        (3, "failed", "rate_limit"),
    ]
    assert len({e["run_id"] for e in executions}) == 3
    assert token["place"] == "submitted" and token["firing"] is None
    assert "rate_limit" in token["last_error"]


async def test_a_retry_that_succeeds_moves_the_token(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    spec = example()
    await register(api, failing_reviewer(spec, "rate_limit", 5))
    await new_token(api, "doc-later")
    await api.post("/tokens/doc-later/fire", json={"transition_id": "ai_review"})
    # Deliver until the first attempt has failed and the second started, then fix the agent.
    while True:
        executions = await pump.deps.transitions.list_executions_for_token("doc-later")
        if len(executions) == 2:
            break
        assert pump.cursor < len(pump.bus.published), "the retry never started"
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        assert await pump.deliver(message)
    assert (await api.post("/agents", json=spec["agents"][0])).status_code == 201
    await pump.run()
    token = (await api.get("/tokens/doc-later")).json()
    assert token["place"] == "reviewed" and token["data"]["review_result"] == "APPROVE"
    executions = (await api.get("/tokens/doc-later/executions")).json()["executions"]
    assert [(e["attempt"], e["status"]) for e in executions] == [(1, "failed"), (2, "succeeded")]


async def test_a_retry_waits_on_a_cloud_task_and_each_attempt_runs_once(stack: Stack) -> None:
    """The backoff is a Cloud Task, not a sleep in the push: the completion returns at once with
    the attempt claimed; duplicate and concurrent copies of the task start it once."""
    clients, pump = stack
    api = clients["api"]
    spec = failing_reviewer(example(), "rate_limit", 5)
    spec["workflows"][0]["transitions"][0]["agent_execution"]["retry_config"]["backoff_seconds"] = (
        60
    )
    await register(api, spec)
    await new_token(api, "doc-backoff")
    await api.post("/tokens/doc-backoff/fire", json={"transition_id": "ai_review"})
    await pump.run()
    completions = [b["status"] for n, _, b in pump.responses if n.endswith("executor-transitions")]
    assert completions == ["retry:2:scheduled"]
    token = (await api.get("/tokens/doc-backoff")).json()
    assert token["place"] == "submitted" and token["firing"]["attempt"] == 2
    waiting = token["firing"]["run_id"]
    assert await pump.deps.runs.get_run(waiting) is None, "the retry started before its backoff"
    executions = (await api.get("/tokens/doc-backoff/executions")).json()["executions"]
    assert [(e["attempt"], e["status"]) for e in executions] == [(1, "failed"), (2, "scheduled")]
    tasks = pump.deps.tasks
    assert isinstance(tasks, InMemoryTaskQueue)
    [task] = [t for t in tasks.tasks if waiting in t.body.decode()]
    assert task.url.endswith("/tasks/place-agent")
    due = datetime.fromisoformat(token["firing"]["not_before"])
    assert abs((task.at - due).total_seconds()) < 1e-3
    executor = clients["run_executor"]
    early = await executor.post("/tasks/place-agent", content=task.body)
    assert early.status_code == 503, "a task before its time must come back, not start the run"
    # A redelivered fire request during the backoff does not start it early either.
    again = await api.post("/tokens/doc-backoff/fire", json={"transition_id": "ai_review"})
    assert again.json()["status"] == "firing"
    assert await pump.deps.runs.get_run(waiting) is None
    # The agent is fixed during the backoff; the task starts attempt 2, once.
    assert (await api.post("/agents", json=example()["agents"][0])).status_code == 201
    later = pump.deps.clock() + timedelta(seconds=61)
    pump.deps.clock = lambda: later
    copies = await asyncio.gather(
        *(executor.post("/tasks/place-agent", content=task.body) for _ in range(3))
    )
    statuses = sorted(r.json()["status"] for r in copies)
    assert statuses == ["duplicate", "duplicate", "started"], statuses
    late = await executor.post("/tasks/place-agent", content=task.body)
    assert late.json()["status"] == "duplicate"
    await pump.run()
    token = (await api.get("/tokens/doc-backoff")).json()
    assert token["place"] == "reviewed" and token["firing"] is None
    executions = (await api.get("/tokens/doc-backoff/executions")).json()["executions"]
    assert [(e["attempt"], e["status"]) for e in executions] == [(1, "failed"), (2, "succeeded")]
    intents = pump.deps.topology.topic("intents")
    started = [json.loads(m.data)["run_id"] for m in pump.bus.published if m.topic == intents]
    assert sorted(started) == sorted(e["run_id"] for e in executions), "one start per attempt"


async def test_required_agent_failure_leaves_the_token_with_the_reason(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await register(api, failing_reviewer(example(), "auth", 5))
    await new_token(api, "doc-auth")
    await api.post("/tokens/doc-auth/fire", json={"transition_id": "ai_review"})
    await pump.run()
    token = (await api.get("/tokens/doc-auth")).json()
    assert token["place"] == "submitted" and token["firing"] is None
    assert "auth" in token["last_error"]
    # auth is not in retry_on_errors: one attempt.
    executions = (await api.get("/tokens/doc-auth/executions")).json()["executions"]
    assert [(e["attempt"], e["error_kind"]) for e in executions] == [(1, "auth")]


async def test_not_required_agent_failure_still_moves_the_token(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    spec = failing_reviewer(example(), "auth", 5)
    spec["workflows"][0]["transitions"][0]["agent_execution"]["required"] = False
    await register(api, spec)
    await new_token(api, "doc-optional")
    await api.post("/tokens/doc-optional/fire", json={"transition_id": "ai_review"})
    await pump.run()
    token = (await api.get("/tokens/doc-optional")).json()
    assert token["place"] == "reviewed"
    assert "review_result" not in token["data"]
    assert "auth" in token["history"][0]["agent_failed"]


async def test_timeout_seconds_ends_the_agent_run(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    spec = copy.deepcopy(example())
    config = spec["workflows"][0]["transitions"][0]["agent_execution"]
    config["timeout_seconds"] = 5
    config["retry_config"] = None
    await register(api, spec)
    await new_token(api, "doc-slow")
    fired = (await api.post("/tokens/doc-slow/fire", json={"transition_id": "ai_review"})).json()
    run = await pump.deps.runs.get_run(fired["execution_id"])
    assert run is not None and run.deadline_at is not None
    assert (run.deadline_at - run.created_at).total_seconds() == 5
    wakes = [t for t in pump.deps.tasks.tasks if fired["execution_id"] in t.body.decode()]  # type: ignore[attr-defined]
    assert any(abs((t.at - run.created_at).total_seconds() - 5) < 1 for t in wakes)
    # Longer than the agent's own timeout (600 s): the transition's still is the deadline.
    config["timeout_seconds"] = 1200
    assert (await api.post("/transition-workflows", json=spec["workflows"][0])).status_code == 201
    await new_token(api, "doc-long")
    fired = (await api.post("/tokens/doc-long/fire", json={"transition_id": "ai_review"})).json()
    run = await pump.deps.runs.get_run(fired["execution_id"])
    assert run is not None and run.deadline_at is not None
    assert (run.deadline_at - run.created_at).total_seconds() == 1200


async def test_not_enabled_and_unresolvable_paths_are_clear_errors(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    await register(api, example())
    await new_token(api, "doc-x", metadata={"type": "memo"})
    wrong_place = await api.post("/tokens/doc-x/fire", json={"transition_id": "approve"})
    assert wrong_place.status_code == 409
    assert "not enabled" in wrong_place.json()["error"]
    unmapped = await api.post("/tokens/doc-x/fire", json={"transition_id": "ai_review"})
    assert unmapped.status_code == 422
    assert "token has no metadata.priority" in unmapped.json()["error"]
    token = (await api.get("/tokens/doc-x")).json()
    assert "metadata.priority" in token["last_error"] and token["place"] == "submitted"
    await new_token(api, "doc-empty", data={})
    rule = await api.post("/tokens/doc-empty/fire", json={"transition_id": "ai_review"})
    assert rule.status_code == 409 and "field_exists(data.content)" in rule.json()["error"]


async def test_registration_refuses_what_the_agent_schemas_say_cannot_resolve(
    stack: Stack,
) -> None:
    clients, _ = stack
    api = clients["api"]
    spec = example()
    await api.post("/agents", json=spec["agents"][0])
    workflow = copy.deepcopy(spec["workflows"][0])
    config = workflow["transitions"][0]["agent_execution"]
    config["input_mapping"] = {"document_content": "data.content", "tone": "metadata.tone"}
    config["output_mapping"]["data.summary"] = "summary"
    refused = await api.post("/transition-workflows", json=workflow)
    assert refused.status_code == 422
    problems = {p["loc"]: p["msg"] for p in refused.json()["problems"]}
    base = "transitions.ai_review.agent_execution"
    assert "takes no input 'tone'" in problems[f"{base}.input_mapping.tone"]
    assert "requires input 'priority'" in problems[f"{base}.input_mapping"]
    assert "gives no output 'summary'" in problems[f"{base}.output_mapping.data.summary"]
    bad = copy.deepcopy(spec["workflows"][0])
    bad["transitions"][0]["to_place"] = "nowhere"
    bad["transitions"][0]["agent_execution"]["input_mapping"]["x"] = "content"
    invalid = await api.post("/transition-workflows", json=bad)
    assert invalid.status_code == 422
    messages = " ".join(p["msg"] for p in invalid.json()["problems"])
    assert "'content' is not a token path" in messages


async def test_fire_by_pubsub_intent_and_a_refused_one_is_dead_lettered(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await register(api, example())
    await new_token(api, "doc-pubsub")
    intent = FireIntent(token_id="doc-pubsub", transition_id="ai_review", version=1)
    for _ in range(2):  # published twice: one firing
        await pump.deps.bus.publish("agents-transitions", intent.model_dump_json().encode(), {})
    await pump.run()
    token = (await api.get("/tokens/doc-pubsub")).json()
    assert token["place"] == "reviewed" and token["history_count"] == 1
    assert len((await api.get("/tokens/doc-pubsub/executions")).json()["executions"]) == 1
    assert await pump.deps.dead_letters.list_dead_letters() == []
    wrong = FireIntent(token_id="doc-pubsub", transition_id="ai_review")
    await pump.deps.bus.publish("agents-transitions", wrong.model_dump_json().encode(), {})
    await pump.run()
    [letter] = await pump.deps.dead_letters.list_dead_letters()
    assert "not enabled" in letter.reason


async def test_a_deleted_agent_is_a_clear_error_on_fire_and_on_registration(
    stack: Stack,
) -> None:
    """Seed 004's ``delete_agent`` beside the workflows that name the agent."""
    clients, _ = stack
    api = clients["api"]
    spec = example()
    await register(api, spec)
    await new_token(api, "doc-orphan")
    assert (await api.delete("/agents/content-reviewer")).status_code in (200, 204)
    assert (await api.get("/agents/content-reviewer")).status_code == 404
    fired = await api.post("/tokens/doc-orphan/fire", json={"transition_id": "ai_review"})
    assert fired.status_code == 409
    assert "content-reviewer" in fired.json()["error"] and "not exist" in fired.json()["error"]
    token = (await api.get("/tokens/doc-orphan")).json()
    assert token["place"] == "submitted" and token["firing"] is None and token["version"] == 1
    refused = await api.post("/transition-workflows", json=spec["workflows"][0])
    assert refused.status_code == 422
    assert any("unknown agent" in p["msg"] for p in refused.json()["problems"])
