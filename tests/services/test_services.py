"""The services end to end in one process: golden push bodies through functions-framework apps."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx

from cloudagents.adapters.memory.messaging import PublishedMessage
from cloudagents.adapters.memory.stores import InMemoryDeadLetterStore, InMemoryRunStore
from cloudagents.context import load_snapshot
from cloudagents.domain.errors import TransientError
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import SnapshotPointer
from cloudagents.tools import tool
from tests.services.conftest import Pump, push_body, scripted_agent

Stack = tuple[dict[str, httpx.AsyncClient], Pump]


async def test_run_over_http_finishes_satisfied_with_a_tool_call(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    assert (await api.post("/agents", json=scripted_agent())).status_code == 201
    started = await api.post("/runs", json={"agent_id": "calc", "message": "what is 6*7?"})
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    await pump.run()
    run = (await api.get(f"/runs/{run_id}")).json()
    assert run["status"] == "finished"
    assert run["result"]["exit"] == "SATISFIED"
    assert run["result"]["payload"] == {"answer": "6*7 = 42"}
    assert run["result"]["tool_calls"] == 1
    assert run["snapshot"]["uri"].startswith("gs://test-project-agent-context/runs/")
    transcript = (await api.get(f"/runs/{run_id}/messages")).json()["messages"]
    assert [m["role"] for m in transcript] == ["system", "user", "assistant", "tool", "assistant"]
    assert transcript[3]["content"] == "42"
    events = (await api.get(f"/runs/{run_id}/events")).json()["events"]
    assert [e["type"] for e in events] == [
        "thinking",
        "tool_call",
        "thinking",
        "tool_result",
        "thinking",
        "content_chunk",
        "completed",
    ]
    assert all(status == 200 for _, status, _ in pump.responses)


async def test_the_snapshot_is_found_in_the_bucket_not_pointed_at_from_the_run(
    stack: Stack,
) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent())
    run_id = (await api.post("/runs", json={"agent_id": "calc", "message": "6*7?"})).json()[
        "run_id"
    ]
    await pump.run()
    runs = pump.deps.runs
    assert isinstance(runs, InMemoryRunStore)
    stored = runs.runs[run_id]
    assert stored.snapshot is None and stored.schema_version == 6
    pointer = (await api.get(f"/runs/{run_id}")).json()["snapshot"]
    assert (pointer["seq"], pointer["message_count"]) == (stored.seq, stored.message_count)
    snapshot = await load_snapshot(pump.deps.blobs, pointer["uri"])
    assert (snapshot.seq, len(snapshot.messages)) == (stored.seq, stored.message_count)
    # A run written before version 6 points at its snapshot from its document: still read
    # when the bucket holds nothing newer.
    old = SnapshotPointer(uri="gs://b/old.json", seq=stored.seq, message_count=1)
    runs.runs[run_id] = stored.model_copy(update={"snapshot": old, "seq": stored.seq})
    assert (await api.get(f"/runs/{run_id}")).json()["snapshot"] == old.model_dump(mode="json")


async def test_run_by_intent_on_the_workspace_topic(stack: Stack) -> None:
    clients, pump = stack
    await clients["api"].post("/agents", json=scripted_agent())
    intent = IntentionMessage.for_run(run_id="intent-run-1", agent_id="calc", message="6*7?")
    await pump.deps.bus.publish("agents", intent.model_dump_json().encode(), {})
    await pump.run()
    run = (await clients["api"].get("/runs/intent-run-1")).json()
    assert run["result"]["exit"] == "SATISFIED"
    assert run["source"] == "pubsub"


async def test_every_message_delivered_twice_changes_nothing(stack: Stack) -> None:
    clients, pump = stack
    await clients["api"].post("/agents", json=scripted_agent())
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7"})
    run_id = started.json()["run_id"]
    while pump.cursor < len(pump.bus.published):
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        await pump.deliver(message)
        await pump.deliver(message)  # the duplicate, right behind the original
    runs = pump.deps.runs
    assert isinstance(runs, InMemoryRunStore)
    run = await runs.get_run(run_id)
    assert run is not None and run.result is not None
    assert run.result.exit.value == "SATISFIED" and run.result.tool_calls == 1
    assert len(await runs.messages(run_id)) == 5
    assert [c.attempts for c in await runs.tool_calls(run_id, 0)] == [1]
    assert len(await runs.interactions(run_id)) == 2
    calls = await runs.model_calls(run_id)
    assert len(calls) == 2 and all(c.applied for c in calls)


async def test_poison_messages_are_dead_lettered_and_acknowledged(stack: Stack) -> None:
    clients, pump = stack
    executor = clients["run_executor"]
    not_json = await executor.post("/pubsub/intents", content=b"{nope")
    assert not_json.status_code == 200 and not_json.json()["status"] == "dead-lettered"
    bad_weight = PublishedMessage(
        "agents",
        json.dumps(
            {"run_id": "r", "source_agent": "x", "attention_weight": 1.5, "payload": {}}
        ).encode(),
        {},
        "m-1",
    )
    response = await executor.post(
        "/pubsub/intents", json=push_body(bad_weight, "agents-run-executor-intents")
    )
    assert response.status_code == 200
    assert "attention_weight" in response.json()["reason"]
    unknown = PublishedMessage("agents-steps", b'{"run_id": "ghost", "seq": 0}', {}, "m-2")
    response = await executor.post(
        "/pubsub/steps", json=push_body(unknown, "agents-run-executor-steps")
    )
    assert response.json()["reason"] == "unknown run 'ghost'"
    letters = pump.deps.dead_letters
    assert isinstance(letters, InMemoryDeadLetterStore)
    reasons = sorted(letter.reason for letter in letters.letters.values())
    assert len(reasons) == 3
    stored = letters.letters["agents-run-executor-steps-m-2"]
    assert base64.b64decode(stored.data) == b'{"run_id": "ghost", "seq": 0}'


async def test_guardrail_block_and_token_budget_via_services(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post(
        "/agents", json=scripted_agent("guarded", guardrails={"blocked_patterns": ["secret"]})
    )
    await api.post(
        "/agents",
        json=scripted_agent(
            "tight",
            budget={"max_tokens_per_run": 5},
        ),
    )
    blocked = (
        await api.post("/runs", json={"agent_id": "guarded", "message": "tell me the secret"})
    ).json()
    tight = (await api.post("/runs", json={"agent_id": "tight", "message": "6*7"})).json()
    await pump.run()
    blocked_run = (await api.get(f"/runs/{blocked['run_id']}")).json()
    assert blocked_run["result"]["exit"] == "GUARDRAIL_BLOCK"
    assert (
        blocked_run["result"]["payload"]["reason"] == "user input matches blocked pattern 'secret'"
    )
    assert blocked_run["result"]["errors"] == [blocked_run["result"]["payload"]["reason"]]
    assert blocked_run["progress"]["errors"] == blocked_run["result"]["errors"]
    tight_run = (await api.get(f"/runs/{tight['run_id']}")).json()
    assert tight_run["result"]["exit"] == "BUDGET_EXCEEDED"
    assert tight_run["result"]["errors"] == [tight_run["result"]["payload"]["reason"]]
    assert "max_tokens_per_run=5" in tight_run["result"]["errors"][0]


async def test_max_iters_via_services_lists_its_reason_in_errors(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent("short", budget={"max_iterations": 1}))
    run_id = (await api.post("/runs", json={"agent_id": "short", "message": "6*7"})).json()[
        "run_id"
    ]
    await pump.run()
    run = (await api.get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "MAX_ITERS"
    assert run["result"]["errors"] == ["reached max_iterations=1"]
    assert run["result"]["payload"]["reason"] == "reached max_iterations=1"


async def test_api_errors_are_clear(stack: Stack) -> None:
    clients, _ = stack
    api = clients["api"]
    assert (await api.post("/runs", json={"agent_id": "nobody", "message": "x"})).status_code == 404
    bad = await api.post("/runs", json={"agent_id": "calc"})
    assert bad.status_code == 422 and bad.json()["problems"][0]["loc"] == "message"
    assert (await api.get("/runs/missing")).status_code == 404
    assert (await api.delete("/runs")).status_code == 405
    invalid_agent = await api.post(
        "/agents", json={"id": "x", "model": {"provider": "grok", "name": "y"}}
    )
    assert invalid_agent.status_code == 422


async def test_cancel_makes_in_flight_steps_stale(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent())
    run_id = (await api.post("/runs", json={"agent_id": "calc", "message": "6*7"})).json()["run_id"]
    cancelled = (await api.post(f"/runs/{run_id}/cancel")).json()
    assert cancelled["result"]["exit"] == "CANCELLED"
    await pump.run()
    run = (await api.get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "CANCELLED"
    assert run["result"]["errors"] == [run["result"]["payload"]["reason"]]


async def test_dead_letter_show_and_replay(stack: Stack) -> None:
    clients, pump = stack
    api = clients["api"]
    await api.post("/agents", json=scripted_agent())
    # An intent for an agent that is registered only afterwards: dead-lettered, then replayed.
    early = IntentionMessage.for_run(run_id="late-agent-run", agent_id="later", message="6*7")
    await pump.deps.bus.publish("agents", early.model_dump_json().encode(), {})
    await pump.run()
    (letter,) = (await api.get("/dead-letters")).json()["dead_letters"]
    assert letter["reason"] == "unknown agent 'later'"
    shown = (await api.get(f"/dead-letters/{letter['id']}")).json()
    assert json.loads(base64.b64decode(shown["data"]))["run_id"] == "late-agent-run"
    await api.post("/agents", json=scripted_agent("later"))
    replay = await api.post(f"/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 202 and replay.json()["topic"] == "agents"
    await pump.run()
    run = (await api.get("/runs/late-agent-run")).json()
    assert run["result"]["exit"] == "SATISFIED"
    assert (await api.get(f"/dead-letters/{letter['id']}")).json()["replayed_at"] is not None
    assert (await api.post("/dead-letters/nope/replay")).status_code == 404


async def test_an_oversized_message_is_dead_lettered_with_its_head(stack: Stack) -> None:
    clients, pump = stack
    big = PublishedMessage("agents-steps", b'{"run_id": "' + b"x" * 1_200_000 + b'"}', {}, "big-1")
    response = await clients["run_executor"].post(
        "/pubsub/steps", json=push_body(big, "agents-run-executor-steps")
    )
    assert response.status_code == 200 and response.json()["status"] == "dead-lettered"
    letters = pump.deps.dead_letters
    assert isinstance(letters, InMemoryDeadLetterStore)
    letter = letters.letters["agents-run-executor-steps-big-1"]
    assert (
        "exceeds 1000000" in letter.reason
        and "kept the first 256000 of 1200014 bytes" in letter.reason
    )
    assert len(base64.b64decode(letter.data)) == 256_000


def _pay_agent() -> dict[str, object]:
    return scripted_agent(
        "payer",
        instructions="You pay.",
        model={
            "provider": "scripted",
            "name": "scripted-demo",
            "script": [
                {"tool_calls": [{"name": "pay", "arguments": {"cents": 500}}]},
                {"content": "paid"},
            ],
        },
        tools=["pay"],
    )


async def _deliver_until_tool_message(pump: Pump) -> PublishedMessage:
    while pump.cursor < len(pump.bus.published):
        message = pump.bus.published[pump.cursor]
        pump.cursor += 1
        if message.topic == "agents-tools":
            return message
        await pump.deliver(message)
    raise AssertionError("no tool message was published")


async def _pay_run_at_its_tool_call(
    stack: Stack, executions: list[int]
) -> tuple[str, PublishedMessage]:
    """A run of the paying agent delivered up to its tool message (not delivered); each
    execution of its non-idempotent ``pay`` tool appends to ``executions``."""
    clients, pump = stack

    @tool(idempotent=False)
    def pay(cents: int) -> dict[str, object]:
        """Pay (a side effect that must happen once).

        Args:
            cents: the amount
        """
        executions.append(cents)
        return {"paid": cents}

    pump.deps.tools.register(pay)
    await clients["api"].post("/agents", json=_pay_agent())
    started = await clients["api"].post("/runs", json={"agent_id": "payer", "message": "pay"})
    return started.json()["run_id"], await _deliver_until_tool_message(pump)


async def test_a_duplicate_of_a_running_non_idempotent_call_waits_for_the_real_result(
    stack: Stack,
) -> None:
    clients, pump = stack
    release = asyncio.Event()
    executions: list[int] = []

    @tool(idempotent=False)
    async def pay(cents: int) -> dict[str, object]:
        """Pay (a side effect that must happen once).

        Args:
            cents: the amount
        """
        await release.wait()
        executions.append(cents)
        return {"paid": cents, "status": "ok"}

    pump.deps.tools.register(pay)
    assert (await clients["api"].post("/agents", json=_pay_agent())).status_code == 201
    started = await clients["api"].post("/runs", json={"agent_id": "payer", "message": "pay"})
    run_id = started.json()["run_id"]
    tool_message = await _deliver_until_tool_message(pump)

    original = asyncio.create_task(pump.deliver(tool_message))
    for _ in range(500):  # let the original claim the call
        call = await pump.deps.runs.get_tool_call(run_id, 0, 0)
        if call is not None and call.status == "running":
            break
        await asyncio.sleep(0.01)
    # The duplicate arrives while the payment is in flight: it asks for redelivery (503) and
    # records nothing, rather than answering "interrupted" for a call that is running.
    assert await pump.deliver(tool_message) is False
    assert pump.responses[-1][1] == 503
    assert "running in another delivery" in pump.responses[-1][2]["error"]
    call = await pump.deps.runs.get_tool_call(run_id, 0, 0)
    assert call is not None and call.status == "running" and call.attempts == 1

    release.set()
    assert await original is True
    await pump.run()  # the redelivery of the duplicate finds the call done
    run = await pump.deps.runs.get_run(run_id)
    assert run is not None and run.result is not None
    assert run.result.exit.value == "SATISFIED"
    assert executions == [500]
    transcript = await pump.deps.runs.messages(run_id)
    assert transcript[3].role == "tool"
    assert json.loads(str(transcript[3].content)) == {"paid": 500, "status": "ok"}


async def test_a_non_idempotent_call_whose_holder_died_is_answered_interrupted(
    stack: Stack,
) -> None:
    pump = stack[1]
    executions: list[int] = []
    run_id, tool_message = await _pay_run_at_its_tool_call(stack, executions)
    # A delivery claimed the call and died before recording anything; its lease has passed.
    claim = await pump.deps.runs.start_tool_call(run_id, 0, 0, lease_seconds=0.0)
    assert claim is not None and claim.outcome == "first"

    assert await pump.deliver(tool_message) is True
    await pump.run()
    assert executions == []  # not run a second time: it may have paid already
    transcript = await pump.deps.runs.messages(run_id)
    assert "was interrupted and is not retried" in str(transcript[3].content)
    call = await pump.deps.runs.get_tool_call(run_id, 0, 0)
    assert call is not None and call.attempts == 2 and call.is_error


async def test_a_result_saved_before_a_failed_finish_is_kept_by_the_redelivery(
    stack: Stack,
) -> None:
    pump = stack[1]
    executions: list[int] = []
    run_id, tool_message = await _pay_run_at_its_tool_call(stack, executions)
    runs = pump.deps.runs
    real_finish = runs.finish_tool_call
    failures = [TransientError("the run document is locked")]

    async def finish_failing_once(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return await real_finish(*args, **kwargs)  # type: ignore[arg-type]

    runs.finish_tool_call = finish_failing_once  # type: ignore[method-assign]
    # The tool runs and its result is saved; taking it off the run's pending list fails: 503.
    assert await pump.deliver(tool_message) is False
    call = await runs.get_tool_call(run_id, 0, 0)
    assert call is not None and call.status == "done" and call.result == {"paid": 500}
    # The redelivery finishes the saved call without running the tool again.
    assert await pump.deliver(tool_message) is True
    await pump.run()
    assert executions == [500]
    run = await runs.get_run(run_id)
    assert run is not None and run.result is not None and run.result.exit.value == "SATISFIED"
    transcript = await runs.messages(run_id)
    assert json.loads(str(transcript[3].content)) == {"paid": 500}


async def test_the_executor_reads_only_new_messages_at_later_steps(stack: Stack) -> None:
    clients, pump = stack
    runs = pump.deps.runs
    starts: list[int] = []
    real_messages = runs.messages

    async def counting_messages(run_id: str, *, start: int = 0) -> list[object]:
        starts.append(start)
        return await real_messages(run_id, start=start)  # type: ignore[return-value]

    runs.messages = counting_messages  # type: ignore[method-assign]
    await clients["api"].post("/agents", json=scripted_agent())
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7"})
    await pump.run()
    run = await runs.get_run(started.json()["run_id"])
    assert run is not None and run.result is not None and run.result.exit.value == "SATISFIED"
    # Step 0 reads the opening messages; step 1 (a later request to the same process) reads
    # from where step 0's transcript ended, not from the start.
    assert starts[0] == 0
    assert any(start > 0 for start in starts[1:]), starts


async def test_a_tool_message_pubsub_gave_up_on_is_recorded_and_replaying_it_finishes_the_run(
    stack: Stack,
) -> None:
    """Pub/Sub parks a message on the subscription's dead-letter topic after its last failed
    attempt; the topic's sink pushes it to the run executor, which records it with its run."""
    clients, pump = stack
    await clients["api"].post("/agents", json=scripted_agent())
    started = await clients["api"].post("/runs", json={"agent_id": "calc", "message": "6*7"})
    run_id = started.json()["run_id"]
    lost = await _deliver_until_tool_message(pump)  # never delivered to the tool invoker
    sink = next(
        s
        for s in pump.deps.topology.dead_letter_sinks
        if s.source_subscription.endswith("tool-invoker")
    )
    parked = PublishedMessage(
        sink.topic, lost.data, {"CloudPubSubDeadLetterSourceDeliveryCount": "10"}, "dlq-1"
    )
    response = await clients["run_executor"].post(sink.path, json=push_body(parked, sink.name))
    assert response.status_code == 200 and response.json()["status"] == "recorded"
    # a duplicate push of the parked message records nothing more
    await clients["run_executor"].post(sink.path, json=push_body(parked, sink.name))

    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["status"] == "waiting_tools"
    (letter,) = run["dead_letters"]
    assert letter["source"] == "agents-tool-invoker"
    assert letter["reason"] == "Pub/Sub gave up after 10 delivery attempts"
    shown = (await clients["api"].get(f"/dead-letters/{letter['id']}")).json()
    assert base64.b64decode(shown["data"]) == lost.data
    assert "CloudPubSubDeadLetterSourceDeliveryCount" not in shown["attributes"]

    replay = await clients["api"].post(f"/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 202 and replay.json()["topic"] == "agents-tools"
    await pump.run()
    run = (await clients["api"].get(f"/runs/{run_id}")).json()
    assert run["result"]["exit"] == "SATISFIED"
    assert run["dead_letters"][0]["replayed"] is True


async def test_a_late_duplicate_of_a_carried_call_republishes_its_audit_record(
    stack: Stack,
) -> None:
    """A dispatch message carries its call (run version 6): a copy delivered after the run
    finished runs nothing, and, finding the call done, publishes its audit record again."""
    pump = stack[1]
    executions: list[int] = []
    run_id, tool_message = await _pay_run_at_its_tool_call(stack, executions)
    assert json.loads(tool_message.data)["call"]["call"]["name"] == "pay"
    assert await pump.deliver(tool_message) is True
    await pump.run()
    run = await pump.deps.runs.get_run(run_id)
    assert run is not None and run.finished

    def audits() -> int:
        return sum(1 for m in pump.bus.published if m.topic.endswith("-tools-audit"))

    before = audits()
    assert await pump.deliver(tool_message) is True
    assert pump.responses[-1][2]["status"] == "duplicate"
    assert audits() == before + 1 and executions == [500]
