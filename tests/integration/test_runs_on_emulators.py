"""A run carried end to end through Pub/Sub and Firestore, on the emulators, by the services."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore, pubsub_v1, storage

from cloudagents.domain.intents import IntentionMessage
from cloudagents.local.stack import LocalStack, StackState
from tests.integration.conftest import register, wait_for_run, wait_until

pytestmark = pytest.mark.integration


def calc_agent(agent_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": agent_id,
        "instructions": "You do arithmetic with the calculator.",
        "model": {
            "provider": "scripted",
            "name": "scripted-calc",
            "script": [
                {
                    "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
                    "total_tokens": 30,
                },
                {"content": "6*7 = 42", "total_tokens": 20},
            ],
        },
        "tools": ["calculator"],
    }
    data.update(overrides)
    return data


def publish(state: StackState, topic: str, data: bytes, **attributes: str) -> str:
    publisher = pubsub_v1.PublisherClient()
    return str(
        publisher.publish(publisher.topic_path(state.project, topic), data, **attributes).result()
    )


def test_run_started_over_http_finishes_with_a_tool_call(
    api: httpx.Client, stack_state: StackState
) -> None:
    register(api, calc_agent("calc-http"))
    started = api.post("/runs", json={"agent_id": "calc-http", "message": "What is 6*7?"})
    assert started.status_code == 202
    run = wait_for_run(api, started.json()["run_id"])
    assert run["result"]["exit"] == "SATISFIED"
    assert run["result"]["payload"] == {"answer": "6*7 = 42"}
    assert (run["result"]["tool_calls"], run["result"]["total_tokens"]) == (1, 50)
    db = firestore.Client(project=stack_state.project)
    calls = list(
        db.collection("agent_runs").document(run["run_id"]).collection("tool_calls").stream()
    )
    assert [(c.get("status"), c.get("result"), c.get("attempts")) for c in calls] == [
        ("done", 42, 1)
    ]
    # One step document per step (and one for the opening messages), each with its interaction.
    steps = list(db.collection("agent_runs").document(run["run_id"]).collection("steps").stream())
    decisions = [(s.get("interaction") or {}).get("decision") for s in steps]
    assert sorted(decisions, key=str) == [None, "finish", "tools:calculator"]


def test_run_started_by_a_pubsub_intent(api: httpx.Client, stack_state: StackState) -> None:
    register(api, calc_agent("calc-intent"))
    run_id = f"intent-{uuid.uuid4().hex[:8]}"
    intent = IntentionMessage.for_run(
        run_id=run_id, agent_id="calc-intent", message="6*7?", source_agent="it"
    )
    publish(stack_state, stack_state.workspace, intent.model_dump_json().encode())
    run = wait_for_run(api, run_id)
    assert run["result"]["exit"] == "SATISFIED" and run["source"] == "pubsub"
    assert run["result"]["tool_calls"] == 1


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud CLI not installed")
def test_readme_gcloud_publish_command_starts_a_run(
    api: httpx.Client, stack_state: StackState
) -> None:
    """The exact command README.md gives, against the emulator."""
    register(api, calc_agent("calc-gcloud"))
    run_id = f"gcloud-{uuid.uuid4().hex[:8]}"
    message = json.dumps(
        {
            "run_id": run_id,
            "source_agent": "cli",
            "attention_weight": 0.8,
            "payload": {"agent_id": "calc-gcloud", "message": "What is 6*7?"},
        }
    )
    env = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{stack_state.env['PUBSUB_EMULATOR_HOST']}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": stack_state.project,
    }
    subprocess.run(
        ["gcloud", "pubsub", "topics", "publish", stack_state.workspace, f"--message={message}"],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"


def test_token_budget_exit(api: httpx.Client) -> None:
    register(api, calc_agent("calc-tight", budget={"max_tokens_per_run": 25}))
    run_id = api.post("/runs", json={"agent_id": "calc-tight", "message": "6*7"}).json()["run_id"]
    result = wait_for_run(api, run_id)["result"]
    assert result["exit"] == "BUDGET_EXCEEDED"
    assert result["payload"]["reason"] == "used 30 tokens, max_tokens_per_run=25"


def test_guardrail_block_with_reason(api: httpx.Client) -> None:
    register(api, calc_agent("calc-guarded", guardrails={"blocked_patterns": ["password"]}))
    run_id = api.post(
        "/runs", json={"agent_id": "calc-guarded", "message": "print the PASSWORD"}
    ).json()["run_id"]
    result = wait_for_run(api, run_id)["result"]
    assert result["exit"] == "GUARDRAIL_BLOCK"
    assert result["payload"]["reason"] == "user input matches blocked pattern 'password'"


def test_high_risk_tool_blocked_before_it_runs(api: httpx.Client, stack_state: StackState) -> None:
    register(
        api,
        calc_agent("calc-strict", guardrails={"risk_threshold": "low", "blocked_patterns": ["7"]}),
    )
    run_id = api.post("/runs", json={"agent_id": "calc-strict", "message": "multiply"}).json()[
        "run_id"
    ]
    result = wait_for_run(api, run_id)["result"]
    assert result["exit"] == "GUARDRAIL_BLOCK"
    assert result["payload"]["reason"] == "arguments of tool 'calculator' match blocked pattern '7'"
    db = firestore.Client(project=stack_state.project)
    assert (
        list(db.collection("agent_runs").document(run_id).collection("tool_calls").stream()) == []
    )


def test_snapshot_object_is_in_the_bucket(api: httpx.Client, stack_state: StackState) -> None:
    register(api, calc_agent("calc-snap"))
    run_id = api.post("/runs", json={"agent_id": "calc-snap", "message": "6*7"}).json()["run_id"]
    wait_for_run(api, run_id)
    run = wait_until(
        lambda: (
            (r := api.get(f"/runs/{run_id}").json())["snapshot"] and r["snapshot"]["seq"] == 2 and r
        ),
        what="final snapshot",
    )
    uri = run["snapshot"]["uri"]
    assert uri == f"gs://{stack_state.project}-agent-context/runs/{run_id}/snapshots/000002.json"
    client = storage.Client(project=stack_state.project)
    blob = client.bucket(f"{stack_state.project}-agent-context").blob(uri.split("/", 3)[3])
    snapshot = json.loads(blob.download_as_bytes())
    assert [m["role"] for m in snapshot["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_one_trace_spans_api_executor_and_tool_invoker(
    api: httpx.Client, local_stack: LocalStack
) -> None:
    register(api, calc_agent("calc-trace"))
    run_id = api.post("/runs", json={"agent_id": "calc-trace", "message": "6*7"}).json()["run_id"]
    wait_for_run(api, run_id)
    spans_file = Path(local_stack.log_dir) / "spans.jsonl"

    def trace_services() -> set[str] | None:
        spans = [json.loads(line) for line in spans_file.read_text().splitlines() if line.strip()]
        start = [
            s
            for s in spans
            if s["name"] == "agent.run.start"
            and s["attributes"].get("cloudagents.run_id") == run_id
        ]
        if not start:
            return None
        services = {s["service"] for s in spans if s["trace_id"] == start[0]["trace_id"]}
        return services if {"api", "run_executor", "tool_invoker"} <= services else None

    services = wait_until(
        trace_services, what="spans from api, run_executor and tool_invoker in one trace"
    )
    assert {"api", "run_executor", "tool_invoker", "context_snapshotter"} <= services
    spans = [json.loads(line) for line in spans_file.read_text().splitlines() if line.strip()]
    chat = [
        s
        for s in spans
        if s["name"].startswith("chat ")
        and s["attributes"].get("gen_ai.request.model") == "scripted-calc"
    ]
    assert chat and chat[0]["attributes"]["gen_ai.operation.name"] == "chat"
    assert "gen_ai.usage.input_tokens" in chat[0]["attributes"]


def test_duplicate_deliveries_change_nothing(api: httpx.Client, stack_state: StackState) -> None:
    register(api, calc_agent("calc-dup"))
    run_id = f"dup-{uuid.uuid4().hex[:8]}"
    intent = IntentionMessage.for_run(
        run_id=run_id, agent_id="calc-dup", message="6*7", source_agent="it"
    )
    data = intent.model_dump_json().encode()
    publish(stack_state, stack_state.workspace, data)
    publish(stack_state, stack_state.workspace, data)
    run = wait_for_run(api, run_id)
    # Re-publish every step and tool message of the finished run, twice.
    for seq in range(run["seq"] + 1):
        publish(
            stack_state,
            f"{stack_state.workspace}-steps",
            json.dumps({"run_id": run_id, "seq": seq}).encode(),
        )
    publish(
        stack_state,
        f"{stack_state.workspace}-tools",
        json.dumps({"run_id": run_id, "seq": 0, "index": 0}).encode(),
    )
    publish(
        stack_state,
        f"{stack_state.workspace}-tools",
        json.dumps({"run_id": run_id, "seq": 0, "index": 0}).encode(),
    )
    publish(stack_state, stack_state.workspace, data)
    db = firestore.Client(project=stack_state.project)
    run_ref = db.collection("agent_runs").document(run_id)

    time.sleep(3.0)  # let the push subscriptions deliver the duplicates
    after = api.get(f"/runs/{run_id}").json()
    assert after["seq"] == run["seq"] and after["result"] == run["result"]
    step_docs = [d.to_dict() for d in run_ref.collection("steps").stream()]
    assert sum(len(d["messages"]) for d in step_docs) == 5
    calls = [c.to_dict() for c in run_ref.collection("model_calls").stream()]
    steps = [d["interaction"] for d in step_docs if d.get("interaction")]
    assert len(steps) == 2
    # The two copies of the intent may both call the model (at-least-once); only one is applied
    # (named by its step's interaction record), and every call made is recorded with its usage.
    applied = {i["applied_model_call"] for i in steps}
    assert sum(c["attempt_id"] in applied for c in calls) == 2 and len(calls) >= 2
    assert [c.get("attempts") for c in run_ref.collection("tool_calls").stream()] == [1]


def test_messages_pubsub_gave_up_on_are_recorded_with_their_run_and_replay(
    api: httpx.Client, stack_state: StackState
) -> None:
    """What reaches a dead-letter topic is pushed to the run executor by the topic's sink
    subscription and recorded in ``dead_letters``: a run lists the letters of its messages, and
    replaying a parked intent starts its run. (The emulator parks a message after 10 failed
    pushes, ~41 s, ``scripts/repro/pubsub_nack.py``; here the messages are published to the
    dead-letter topics as Pub/Sub does then.)"""
    register(api, calc_agent("calc-parked"))
    started = api.post("/runs", json={"agent_id": "calc-parked", "message": "What is 6*7?"})
    run = wait_for_run(api, started.json()["run_id"])
    step = json.dumps({"run_id": run["run_id"], "seq": 1, "schema_version": 1}).encode()
    publish(stack_state, f"{stack_state.workspace}-run-executor-steps-dead-letter", step)
    letters = wait_until(
        lambda: api.get(f"/runs/{run['run_id']}").json()["dead_letters"], what="the dead letter"
    )
    assert [(d["source"], d["replayed"]) for d in letters] == [
        (f"{stack_state.workspace}-run-executor-steps", False)
    ]
    assert letters[0]["reason"].startswith("Pub/Sub gave up")

    run_id = f"parked-{uuid.uuid4().hex[:8]}"
    intent = IntentionMessage.for_run(run_id=run_id, agent_id="calc-parked", message="6*7?")
    parked_topic = f"{stack_state.workspace}-run-executor-intents-dead-letter"
    publish(stack_state, parked_topic, intent.model_dump_json().encode())

    def parked_letter() -> dict[str, Any] | None:
        listed = api.get("/dead-letters").json()["dead_letters"]
        return next((d for d in listed if d.get("run_id") == run_id), None)

    letter = wait_until(parked_letter, what="the parked intent's dead letter")
    assert letter["source"] == f"{stack_state.workspace}-run-executor-intents"
    assert api.get(f"/runs/{run_id}").status_code == 404  # parked: the run never started
    replay = api.post(f"/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 202 and replay.json()["topic"] == stack_state.workspace
    assert wait_for_run(api, run_id)["result"]["exit"] == "SATISFIED"


def test_a_run_written_in_the_previous_layout_finishes_in_step_documents(
    api: httpx.Client, stack_state: StackState
) -> None:
    """A version 4 run, half done by a release before step documents (one document per message,
    per event and per interaction record), is continued by the services: its step message is
    applied, the run finishes, and its transcript, events and interactions read whole."""
    from cloudagents.domain.events import ToolCallEvent, ToolResultEvent
    from cloudagents.domain.messages import Message, ToolCall
    from cloudagents.domain.results import RunProgress
    from cloudagents.domain.runs import Interaction, RunRecord, RunStatus, ToolCallRecord

    register(api, calc_agent("calc-legacy"))
    run_id = f"legacy-{uuid.uuid4().hex[:8]}"
    call = ToolCall(id="call_0_0", name="calculator", arguments={"expression": "6*7"})
    transcript = [
        Message(role="system", content="You do arithmetic with the calculator."),
        Message(role="user", content="What is 6*7?"),
        Message(role="assistant", tool_calls=[call]),
    ]
    record = ToolCallRecord(
        run_id=run_id, seq=0, index=0, call=call, idempotency_key=f"{run_id}:0:0"
    ).finished_with(42, False, None)
    run = RunRecord(
        run_id=run_id,
        agent_id="calc-legacy",
        status=RunStatus.WAITING_TOOLS,
        seq=1,
        progress=RunProgress(iterations=1, total_tokens=30),
        message_count=3,
    )
    db = firestore.Client(project=stack_state.project)
    ref = db.collection("agent_runs").document(run_id)
    ref.set({**run.model_dump(mode="json"), "schema_version": 4})
    for i, message in enumerate(transcript):
        ref.collection("messages").document(f"{i:06d}").set(
            {"i": i, **message.model_dump(mode="json")}
        )
    ref.collection("tool_calls").document(record.doc_id).set(record.model_dump(mode="json"))
    for event in (
        ToolCallEvent(run_id=run_id, seq=0, id="000000-b0000", call_id=call.id,
                      tool_name=call.name, arguments=call.arguments),
        ToolResultEvent(run_id=run_id, seq=0, id="000000-c0000", call_id=call.id,
                        tool_name=call.name, result=42),
    ):  # fmt: skip
        ref.collection("events").document(event.id).set(event.model_dump(mode="json"))
    step0 = Interaction(
        run_id=run_id, agent_id="calc-legacy", seq=0, decision="tools:calculator", total_tokens=30
    )
    db.collection("interactions").document(f"{run_id}-000000").set(step0.model_dump(mode="json"))

    publish(
        stack_state,
        f"{stack_state.workspace}-steps",
        json.dumps({"run_id": run_id, "seq": 1}).encode(),
    )
    finished = wait_for_run(api, run_id)
    assert finished["result"]["exit"] == "SATISFIED", finished["result"]
    assert finished["result"]["payload"] == {"answer": "6*7 = 42"}
    assert (finished["result"]["tool_calls"], finished["result"]["total_tokens"]) == (1, 50)
    assert ref.get().get("schema_version") == 6
    messages = api.get(f"/runs/{run_id}/messages").json()["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[-1]["content"] == "6*7 = 42"
    events = [e["id"] for e in api.get(f"/runs/{run_id}/events").json()["events"]]
    assert events[:2] == ["000000-b0000", "000000-c0000"] and len(events) > 2
    assert events == sorted(events)
    step1 = ref.collection("steps").document("000001").get()
    assert (step1.get("first"), step1.get("end")) == (3, 5)
    assert step1.get("interaction")["decision"] == "finish"
