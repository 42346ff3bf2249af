"""``RunStore``'s approvals on the fake and on Firestore: a step commits its approval documents;
``change_approval`` applies ``engine/approvals.change`` to approval, call and run at once, so a
decision racing the expiry, or two decisions racing each other, change the approval once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.approvals import ApprovalDecision
from cloudagents.domain.messages import Message, ModelResponse, ToolCall, Usage
from cloudagents.domain.results import RunProgress
from cloudagents.domain.runs import RunRecord, RunStatus
from cloudagents.engine import approvals, plan
from cloudagents.engine.approvals import Gate
from cloudagents.engine.step import CallTools
from cloudagents.ports.stores import RunStore
from tests.contract.conftest import new_id, race

pytestmark = pytest.mark.contract

AGENT = AgentDefinition.model_validate(
    {
        "id": "payer",
        "model": {"name": "m"},
        "approval": {"threshold": "high", "timeout_seconds": 60},
    }
)


async def gated_run(store: RunStore) -> tuple[RunRecord, datetime]:
    """A run whose step 0 called ``lookup`` (dispatched) and ``refund`` (waiting for a person)."""
    now = datetime.now(UTC)
    run = RunRecord(
        run_id=new_id("run"),
        agent_id="payer",
        created_at=now,
        deadline_at=now + timedelta(hours=1),
        principal="starter",
    )
    assert await store.create_run(run, [Message(role="user", content="refund it")])
    calls = (
        ToolCall(id="c0", name="lookup", arguments={"order": "A"}),
        ToolCall(id="c1", name="refund", arguments={"amount": 5}),
    )
    reply = ModelResponse(tool_calls=list(calls), usage=Usage(total_tokens=10))
    commit, label = plan.plan_outcome(
        plan.StepContext(now=now, wake_seconds=60, context_bucket="b"),
        run,
        AGENT,
        RunProgress(iterations=1, total_tokens=10),
        [reply.as_message()],
        reply,
        CallTools(calls, {1: Gate("risky", "high")}),
    )
    assert label == "tools:2 awaiting-approval:1"
    assert await store.commit_step(commit) is not None
    return run, now


def approve(who: str, at: datetime) -> ApprovalDecision:
    return ApprovalDecision(principal=who, verdict="approve", at=at)


async def test_a_step_commits_its_approval_and_the_run_waits_for_it(run_store: RunStore) -> None:
    run, now = await gated_run(run_store)
    stored = await run_store.get_run(run.run_id)
    assert stored is not None and stored.status is RunStatus.WAITING_APPROVAL
    assert [(p.kind, p.id) for p in stored.pending] == [
        ("tool_call", "000000-000"),
        ("approval", "000000-001"),
    ]
    approval = await run_store.get_approval(run.run_id, "000000-001")
    assert approval is not None and approval.status == "pending" and approval.tool == "refund"
    assert approval.started_by == "starter"
    assert approval.expires_at == now + timedelta(seconds=60)
    inbox = await run_store.list_approvals(status="pending", limit=500)
    assert any(a.run_id == run.run_id for a in inbox)
    assert [a.approval_id for a in await run_store.list_approvals(run_id=run.run_id)] == [
        "000000-001"
    ]
    (call,) = [c for c in await run_store.tool_calls(run.run_id, 0) if c.index == 1]
    assert call.approval == "required" and call.status == "pending"


async def test_approval_racing_the_expiry_changes_it_once(run_store: RunStore) -> None:
    run, now = await gated_run(run_store)
    at = now + timedelta(seconds=60)  # the expiry instant: the expiry wins, the person is late
    results = await race(
        [
            lambda: run_store.change_approval(
                run.run_id,
                "000000-001",
                lambda a, r, c: approvals.change(a, r, c, approve("alice", at), at),
            ),
            lambda: run_store.change_approval(
                run.run_id, "000000-001", lambda a, r, c: approvals.change(a, r, c, "expire", at)
            ),
        ]
    )
    assert all(r is not None for r in results)
    final = await run_store.get_approval(run.run_id, "000000-001")
    assert final is not None and final.status == "expired"
    (call,) = [c for c in await run_store.tool_calls(run.run_id, 0) if c.index == 1]
    assert call.status == "done" and call.approval == "expired" and call.is_error
    stored = await run_store.get_run(run.run_id)
    assert stored is not None and [p.id for p in stored.pending] == ["000000-000"]
    assert stored.status is RunStatus.WAITING_TOOLS


async def test_two_approvers_racing_for_one_approval_dispatch_once(run_store: RunStore) -> None:
    run, now = await gated_run(run_store)
    results = await race(
        [
            lambda who=who: run_store.change_approval(  # type: ignore[misc]
                run.run_id,
                "000000-001",
                lambda a, r, c: approvals.change(a, r, c, approve(who, now), now),
            )
            for who in ("alice", "bob", "carol")
        ]
    )
    dispatched = [r for r in results if r is not None and r.publish]
    assert len(dispatched) == 1
    final = await run_store.get_approval(run.run_id, "000000-001")
    assert final is not None and final.status == "approved" and len(final.decisions) == 1
    stored = await run_store.get_run(run.run_id)
    assert stored is not None
    assert [(p.kind, p.id) for p in stored.pending] == [
        ("tool_call", "000000-000"),
        ("tool_call", "000000-001"),
    ]


async def test_remembered_approvals_are_found_by_run_and_agent(run_store: RunStore) -> None:
    run, now = await gated_run(run_store)
    decision = ApprovalDecision(principal="alice", verdict="approve", remember="agent", at=now)
    change = await run_store.change_approval(
        run.run_id, "000000-001", lambda a, r, c: approvals.change(a, r, c, decision, now)
    )
    assert change is not None and change.grant is not None
    grants = await run_store.approval_grants(new_id("other-run"), "payer", ["refund", "lookup"])
    assert [(g.scope, g.tool) for g in grants] == [("agent", "refund")]
    assert approvals.granted(grants, "refund", now) and not approvals.granted(grants, "lookup", now)
    assert await run_store.change_approval(run.run_id, "999999-000", lambda a, r, c: None) is None  # type: ignore[arg-type,return-value]
