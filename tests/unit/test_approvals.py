"""Approvals: the pure rules (``engine/approvals.py``) and runs in process through the one engine
(``Agent.run(approval=...)``), where each approved call runs once and each rejected or expired
call never."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cloudagents import Agent, AgentDefinition, LoopExit, Tool
from cloudagents.domain.approvals import ApprovalDecision, ApprovalPolicy, ApprovalRecord
from cloudagents.domain.messages import ToolCall
from cloudagents.domain.runs import PendingItem, RunRecord, RunStatus, ToolCallRecord
from cloudagents.engine import approvals
from cloudagents.engine.approvals import Refused
from cloudagents.tools import approval_predicate

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# ---- the pure rules --------------------------------------------------------------------------


def record(**overrides: Any) -> ApprovalRecord:
    data: dict[str, Any] = {
        "run_id": "r",
        "approval_id": "000000-001",
        "agent_id": "a",
        "seq": 0,
        "index": 1,
        "tool": "refund",
        "call_id": "c1",
        "arguments": {"amount": 500},
        "risk": "high",
        "requested_at": T0,
        "expires_at": T0 + timedelta(seconds=60),
    }
    data.update(overrides)
    return ApprovalRecord.model_validate(data)


def waiting_run(*pending: PendingItem) -> RunRecord:
    return RunRecord(
        run_id="r",
        agent_id="a",
        seq=1,
        status=RunStatus.WAITING_APPROVAL,
        pending=list(pending),
        deadline_at=T0 + timedelta(hours=1),
    )


def gated_call() -> ToolCallRecord:
    return ToolCallRecord(
        run_id="r",
        seq=0,
        index=1,
        call=ToolCall(id="c1", name="refund", arguments={"amount": 500}),
        idempotency_key="r:0:1",
        approval="required",
    )


def says(principal: str, verdict: str = "approve", **extra: Any) -> ApprovalDecision:
    return ApprovalDecision(principal=principal, verdict=verdict, at=T0, **extra)  # type: ignore[arg-type]


APPROVAL = PendingItem(kind="approval", id="000000-001", deadline=T0 + timedelta(seconds=60))
OTHER = PendingItem(kind="tool_call", id="000000-000")


def test_policy_is_refused_with_the_field_and_reason() -> None:
    with pytest.raises(ValidationError, match="quorum 3 can never be reached by 2"):
        ApprovalPolicy(approvers=["alice", "bob"], quorum=3)
    with pytest.raises(ValidationError, match="on_timeout"):
        ApprovalPolicy.model_validate({"on_timeout": "maybe"})
    with pytest.raises(ValidationError, match="timeout_seconds"):
        ApprovalPolicy(timeout_seconds=0)
    with pytest.raises(ValidationError, match="threshold"):
        AgentDefinition.model_validate(
            {"id": "x", "model": {"name": "m"}, "approval": {"threshold": "extreme"}}
        )


def test_gate_by_threshold_rule_and_never() -> None:
    call = ToolCall(id="c", name="refund", arguments={})
    policy = ApprovalPolicy(threshold="medium")
    assert approvals.gate(policy, call, "low", None, "x") is None
    assert approvals.gate(policy, call, "medium", None, "x") is not None
    assert approvals.gate(policy, call, "high", False, "x") is None  # "never" wins
    assert approvals.gate(None, call, "high", None, "x") is None  # no policy: tools' rules only
    assert approvals.gate(None, call, "low", True, "the tool") is not None


def test_approve_dispatches_the_call_with_edited_arguments() -> None:
    change = approvals.change(
        record(),
        waiting_run(OTHER, APPROVAL),
        gated_call(),
        says("alice", arguments={"amount": 50}),
        T0,
    )
    assert change.approval.status == "approved" and change.refused is None
    assert change.call is not None and change.call.call.arguments == {"amount": 50}
    assert change.call.approval == "approved" and change.call.status == "pending"
    assert change.run is not None
    assert [(p.kind, p.id) for p in change.run.pending] == [
        ("tool_call", "000000-000"),
        ("tool_call", "000000-001"),
    ]
    assert change.run.status is RunStatus.WAITING_TOOLS
    assert [m.topic for m in change.publish] == ["tools"]
    assert change.approval.arguments == {"amount": 500}  # the original is kept


def test_reject_resolves_the_item_and_wakes_the_run_when_last() -> None:
    change = approvals.change(
        record(), waiting_run(APPROVAL), gated_call(), says("bob", "reject", reason="too big"), T0
    )
    assert change.approval.status == "rejected"
    assert change.call is not None and change.call.status == "done" and change.call.is_error
    assert "rejected by bob: too big" in str(change.call.result)
    assert change.run is not None and change.run.pending == []
    assert [m.topic for m in change.publish] == ["steps"]


def test_quorum_of_two_and_a_second_decision_by_the_same_person() -> None:
    two = record(quorum=2, approvers=["alice", "bob"])
    first = approvals.change(two, waiting_run(APPROVAL), gated_call(), says("alice"), T0)
    assert first.approval.status == "pending" and first.written and first.publish == []
    again = approvals.judge(first.approval, says("alice"), T0)
    assert isinstance(again, Refused) and again.status == 409
    second = approvals.change(first.approval, waiting_run(APPROVAL), gated_call(), says("bob"), T0)
    assert second.approval.status == "approved"
    assert second.approval.decided_by == ["alice", "bob"]
    late = approvals.judge(second.approval, says("carol"), T0)
    assert isinstance(late, Refused) and late.status == 409 and "already approved" in late.reason


def test_only_approvers_and_not_the_runs_own_principal() -> None:
    named = record(approvers=["alice"])
    refused = approvals.judge(named, says("mallory"), T0)
    assert isinstance(refused, Refused) and refused.status == 403
    own = record(self_approval=False, started_by="alice")
    refused = approvals.judge(own, says("alice"), T0)
    assert (
        isinstance(refused, Refused)
        and refused.status == 403
        and "started this run" in (refused.reason)
    )


def test_a_decision_after_the_expiry_loses_to_it_in_the_same_write() -> None:
    at = T0 + timedelta(seconds=61)
    change = approvals.change(record(), waiting_run(APPROVAL), gated_call(), says("alice"), at)
    assert change.approval.status == "expired" and change.written
    assert change.refused is not None and change.refused.status == 409
    assert change.call is not None and "denied automatically" in str(change.call.result)
    early = approvals.change(record(), waiting_run(APPROVAL), gated_call(), "expire", T0)
    assert early.refused is not None and not early.written  # not yet: nothing changes


def test_halt_marks_the_call_and_leaves_the_run_to_be_stopped() -> None:
    at = T0 + timedelta(seconds=60)
    change = approvals.change(
        record(on_timeout="halt"), waiting_run(APPROVAL), gated_call(), "expire", at
    )
    assert change.halt and change.run is None
    assert change.call is not None and change.call.approval == "expired"
    stop = approvals.halt_stop(change.approval)
    assert stop.exit is LoopExit.APPROVAL_TIMEOUT and "expired after 60 s" in stop.reason


def test_rejection_and_expiry_are_worded_apart() -> None:
    rejected = record(status="rejected", decided_by=["bob"], decision_reason="no")
    assert "rejected by bob" in approvals.rejection_text(rejected)
    assert "denied automatically" in approvals.expiry_text(record())
    assert approvals.rejection_text(rejected) != approvals.expiry_text(record())


# ---- in process, through the one engine ------------------------------------------------------

EXECUTED: list[tuple[str, int]] = []


def refund(amount: int) -> str:
    """Refund an amount to the customer.

    Args:
        amount: how much, in euros
    """
    EXECUTED.append(("refund", amount))
    return f"refunded {amount}"


def lookup(order: str) -> str:
    """Look an order up."""
    EXECUTED.append(("lookup", 0))
    return f"order {order}: shipped"


@approval_predicate("refund_over_100")
def refund_over_100(args: dict[str, Any]) -> bool:
    return int(args.get("amount", 0)) > 100


def support(**overrides: Any) -> AgentDefinition:
    data: dict[str, Any] = {
        "id": "support",
        "model": {
            "provider": "scripted",
            "name": "scripted",
            "script": [
                {
                    "tool_calls": [
                        {"name": "lookup", "arguments": {"order": "A1"}},
                        {"name": "refund", "arguments": {"amount": 500}},
                    ]
                },
                {"content": "done"},
            ],
        },
        "tools": ["lookup", "refund"],
        "approval": {"threshold": "high", "timeout_seconds": 30},
    }
    data.update(overrides)
    return AgentDefinition.model_validate(data)


TOOLS = [Tool("lookup", lookup), Tool("refund", refund, "high")]


@pytest.fixture(autouse=True)
def _clear() -> None:
    EXECUTED.clear()


async def results_of(agent: Agent, run_id: str) -> dict[str, str]:
    calls = await agent.driver.deps.runs.tool_calls(run_id, 0)
    return {c.call.name: str(c.result) for c in calls}


async def test_approved_call_runs_once_and_the_sibling_did_not_wait() -> None:
    seen: list[ApprovalRecord] = []

    async def approve(approval: ApprovalRecord) -> bool:
        seen.append(approval)
        await asyncio.sleep(0.05)
        assert ("lookup", 0) in EXECUTED  # the other call of the step ran meanwhile
        return True

    agent = Agent(support(), tools=TOOLS)
    result = await agent.run("refund A1", run_id="ok", approval=approve)
    assert result.exit is LoopExit.SATISFIED
    assert EXECUTED.count(("refund", 500)) == 1
    assert [a.tool for a in seen] == ["refund"] and seen[0].risk == "high"
    stored = await agent.driver.deps.runs.get_approval("ok", seen[0].approval_id)
    assert stored is not None and stored.status == "approved" and stored.decided_by == ["local"]
    events = [e.type for e in await agent.driver.deps.runs.events("ok")]
    assert "approval_requested" in events
    audit = [a.action for a in await agent.driver.deps.audit.list_audit()]
    assert "approval requested" in audit and "approval approved" in audit


async def test_rejected_call_never_runs_and_the_model_reads_why() -> None:
    agent = Agent(support(), tools=TOOLS)
    result = await agent.run(
        "refund A1",
        run_id="no",
        approval=lambda a: {"decision": "reject", "reason": "over the limit", "principal": "bob"},
    )
    assert result.exit is LoopExit.SATISFIED
    assert ("refund", 500) not in EXECUTED
    assert "rejected by bob: over the limit" in (await results_of(agent, "no"))["refund"]
    messages = await agent.driver.deps.runs.messages("no")
    assert any("rejected by bob" in (m.content or "") for m in messages if m.role == "tool")


async def test_edited_arguments_are_what_runs() -> None:
    agent = Agent(support(), tools=TOOLS)
    result = await agent.run(
        "refund A1",
        run_id="edit",
        approval=lambda a: {"decision": "approve", "arguments": {"amount": 80}},
    )
    assert result.exit is LoopExit.SATISFIED
    assert EXECUTED.count(("refund", 80)) == 1 and ("refund", 500) not in EXECUTED


async def test_edited_arguments_must_match_the_tool_schema() -> None:
    agent = Agent(support(), tools=TOOLS)
    with pytest.raises(Exception, match="edited arguments for refund"):
        await agent.run(
            "refund A1",
            run_id="bad-edit",
            approval=lambda a: {"decision": "approve", "arguments": {"amount": "lots"}},
        )
    assert ("refund", 500) not in EXECUTED


async def test_expiry_denies_and_halt_ends_the_run() -> None:
    deny = Agent(support(approval={"timeout_seconds": 0.2}), tools=TOOLS)
    result = await deny.run("refund A1", run_id="deny", approval=lambda a: None)
    assert result.exit is LoopExit.SATISFIED
    assert "denied automatically" in (await results_of(deny, "deny"))["refund"]
    halt = Agent(support(approval={"timeout_seconds": 0.2, "on_timeout": "halt"}), tools=TOOLS)
    result = await halt.run("refund A1", run_id="halt", approval=lambda a: None)
    assert result.exit is LoopExit.APPROVAL_TIMEOUT
    assert "expired after 0.2 s" in str(result.payload["reason"])
    assert ("refund", 500) not in EXECUTED


async def test_a_predicate_gates_by_the_arguments_and_remember_run_approves_later_calls() -> None:
    asked: list[int] = []
    turns = [
        {"tool_calls": [{"name": "refund", "arguments": {"amount": 20}}]},
        {"tool_calls": [{"name": "refund", "arguments": {"amount": 200}}]},
        {"tool_calls": [{"name": "refund", "arguments": {"amount": 300}}]},
        {"content": "done"},
    ]
    definition = support(
        model={"provider": "scripted", "name": "s", "script": turns},
        approval={"threshold": None, "tools": {"refund": "refund_over_100"}},
        guardrails={"risk_threshold": "high"},  # a small refund is not blocked either
    )

    def once(approval: ApprovalRecord) -> dict[str, Any]:
        asked.append(int(approval.arguments["amount"]))  # type: ignore[arg-type]
        return {"decision": "approve", "remember": "run"}

    agent = Agent(definition, tools=TOOLS)
    result = await agent.run("refunds", run_id="pred", approval=once)
    assert result.exit is LoopExit.SATISFIED
    assert asked == [200]  # 20 is under the predicate; 300 is covered by the remembered grant
    assert [a for n, a in EXECUTED if n == "refund"] == [20, 200, 300]


async def test_without_a_callback_or_terminal_the_call_is_rejected() -> None:
    agent = Agent(support(), tools=TOOLS)
    result = await agent.run("refund A1", run_id="nobody")
    assert result.exit is LoopExit.SATISFIED
    assert "no approval callback" in (await results_of(agent, "nobody"))["refund"]
    assert ("refund", 500) not in EXECUTED
