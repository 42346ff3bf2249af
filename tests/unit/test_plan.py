"""The step planner (``engine/plan.py``) is pure: the same run, reply and outcome give the same
commit, with no store, clock or network in reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.handoffs import HandoffTarget
from cloudagents.domain.messages import ModelResponse, ToolCall, Usage
from cloudagents.domain.results import LoopExit, RunProgress
from cloudagents.domain.runs import RunRecord, RunStatus
from cloudagents.engine import plan
from cloudagents.engine.step import CallTools, Finish, HandOff, Stop

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
AT = plan.StepContext(now=T0, wake_seconds=60, context_bucket="p-agent-context")
AGENT = AgentDefinition.model_validate(
    {"id": "a", "model": {"provider": "openai", "name": "gpt-4o"}, "max_chain_depth": 1}
)


def run(**fields: object) -> RunRecord:
    return RunRecord.model_validate(
        {"run_id": "r", "agent_id": "a", "status": "running", "seq": 3, **fields}
    )


def reply(*calls: ToolCall) -> ModelResponse:
    return ModelResponse(content=None, tool_calls=list(calls), usage=Usage(total_tokens=9))


def test_tool_calls_become_pending_items_tool_messages_and_a_wake_up_before_the_deadline() -> None:
    calls = (
        ToolCall(id="c0", name="add", arguments={}),
        ToolCall(id="c1", name="mul", arguments={}),
    )
    deadline = T0 + timedelta(seconds=30)
    waiting = run(deadline_at=deadline.isoformat())
    commit, label = plan.plan_outcome(
        AT, waiting, AGENT, RunProgress(), [], reply(*calls), CallTools(calls)
    )
    assert label == "tools:2" and commit.status is RunStatus.WAITING_TOOLS
    assert [(p.kind, p.id, p.deadline) for p in commit.pending] == [
        ("tool_call", "000003-000", deadline),
        ("tool_call", "000003-001", deadline),
    ]
    assert [m.topic for m in commit.outbox] == ["tools", "tools", "snapshots", "wakeups"]
    assert commit.outbox[-1].data["at"] == deadline.isoformat().replace("+00:00", "Z")
    assert [c.idempotency_key for c in commit.tool_calls] == ["r:3:0", "r:3:1"]
    again = plan.plan_outcome(
        AT, waiting, AGENT, RunProgress(), [], reply(*calls), CallTools(calls)
    )
    assert again[0].model_dump() == commit.model_dump()  # pure: same input, same plan


def test_a_handoff_past_the_chain_depth_ends_the_run_with_the_reason() -> None:
    target = HandoffTarget(required_capabilities=["ocr"], message="take it")
    deep = run(chain_depth=1)
    commit, label = plan.plan_outcome(AT, deep, AGENT, RunProgress(), [], reply(), HandOff(target))
    assert label == "finished:ERROR" and commit.result is not None
    assert "chain depth 2 exceeds max_chain_depth=1" in commit.result.payload["reason"]
    assert commit.result.errors == [commit.result.payload["reason"]]
    commit, label = plan.plan_outcome(AT, run(), AGENT, RunProgress(), [], reply(), HandOff(target))
    assert label == "handoff" and commit.handoff_offer is not None
    assert commit.handoff_offer.context_uri == "gs://p-agent-context/runs/r/snapshots/000004.json"
    assert commit.handoff_offer.expires_at == T0 + timedelta(seconds=target.ttl_seconds)


def test_every_stop_and_finish_is_one_finished_commit_with_its_event() -> None:
    commit, _ = plan.plan_outcome(AT, run(), AGENT, RunProgress(), [], reply(), Finish({"a": 1}))
    assert commit.result is not None and commit.result.exit is LoopExit.SATISFIED
    assert [e.type for e in commit.events] == ["completed"]
    stop = Stop(LoopExit.BUDGET_EXCEEDED, "token budget")
    commit, label = plan.plan_stop(AT, run(), RunProgress(), [], stop)
    assert label == "finished:BUDGET_EXCEEDED" and [e.type for e in commit.events] == ["failed"]
    assert commit.result is not None and commit.result.errors == ["token budget"]
    assert plan.timed_out(run(deadline_at=T0.isoformat()), T0 - timedelta(seconds=1)) is None
