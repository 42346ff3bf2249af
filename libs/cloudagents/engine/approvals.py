"""Approvals as pure rules: which calls are gated, what a decision or an expiry does to the
approval, and what settling it does to the tool call and the run. Both run stores apply
``change`` inside one guarded write of the approval, its tool call and the run, so a human
decision racing the expiry is settled there: exactly one of them changes the approval.

Settling an approval:

* ``approved`` (quorum reached): the call (with any edited arguments) becomes an ordinary
  pending tool call and is dispatched; the run stays waiting.
* ``rejected`` / ``expired`` under ``on_timeout: deny``: the call is ``done`` with an error
  result the model reads (worded differently for a person's rejection and for the timeout), and
  the approval leaves the run's pending items through the barrier (``waits.resolve``), waking the
  run if it was the last thing it waited for.
* ``expired`` under ``on_timeout: halt``: the call is marked expired and the caller ends the run
  ``APPROVAL_TIMEOUT`` (``plan.plan_stop``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from cloudagents.domain.approvals import (
    ApprovalDecision,
    ApprovalGrant,
    ApprovalPolicy,
    ApprovalRecord,
)
from cloudagents.domain.events import RunEvent, ToolResultEvent, event_id
from cloudagents.domain.messages import ToolCall
from cloudagents.domain.policy import RISK_ORDER, RiskLevel
from cloudagents.domain.results import LoopExit
from cloudagents.domain.runs import (
    OutboxMessage,
    PendingItem,
    RunRecord,
    StepMessage,
    ToolCallRecord,
    ToolMessage,
)
from cloudagents.engine import waits
from cloudagents.engine.step import Stop

NO_POLICY = ApprovalPolicy(threshold=None)
"""The policy of an agent that declares none: only tools that say they need approval are gated."""


@dataclass(frozen=True)
class Gate:
    """Why a call waits for a person, and the risk it is shown with."""

    reason: str
    risk: RiskLevel


def gate(
    policy: ApprovalPolicy | None, call: ToolCall, risk: RiskLevel, says: bool | None, source: str
) -> Gate | None:
    """The gate of one call, or ``None``. ``says``: what the call's own rule answered (the
    policy's ``tools`` entry or the tool's ``needs_approval``; ``None``: it has none), and
    ``source`` names that rule. An explicit ``False`` (``never``) wins over the threshold."""
    policy = policy or NO_POLICY
    if says is False:
        return None
    if says:
        return Gate(f"{source} requires approval for {call.name!r}", risk)
    if policy.threshold is not None and RISK_ORDER[risk] >= RISK_ORDER[policy.threshold]:
        return Gate(
            f"tool {call.name!r} has risk {risk!r}, at or above the approval threshold "
            f"{policy.threshold!r}",
            risk,
        )
    return None


def request(
    run: RunRecord,
    policy: ApprovalPolicy | None,
    record: ToolCallRecord,
    why: Gate,
    now: datetime,
) -> ApprovalRecord:
    """The approval document a step writes for a gated call."""
    policy = policy or NO_POLICY
    return ApprovalRecord(
        run_id=run.run_id,
        approval_id=record.doc_id,
        agent_id=run.agent_id,
        seq=record.seq,
        index=record.index,
        tool=record.call.name,
        call_id=record.call.id,
        arguments=dict(record.call.arguments),
        risk=why.risk,
        reason_required=why.reason,
        requested_at=now,
        expires_at=now + timedelta(seconds=policy.timeout_seconds),
        on_timeout=policy.on_timeout,
        approvers=list(policy.approvers),
        quorum=policy.quorum,
        self_approval=policy.self_approval,
        remember_seconds=policy.remember_seconds,
        started_by=run.principal,
    )


@dataclass(frozen=True)
class Refused:
    """Why a decision changed nothing: ``status`` is the HTTP answer (403 or 409)."""

    status: int
    reason: str


Action = ApprovalDecision | Literal["expire"]


def judge(approval: ApprovalRecord, action: Action, now: datetime) -> ApprovalRecord | Refused:
    """The approval after ``action``, or why it is refused. A decision that comes at or after
    ``expires_at`` loses to the expiry (applied by ``change``), whoever comes first."""
    if approval.final:
        return Refused(409, f"approval {approval.approval_id} is already {approval.status}")
    if action == "expire":
        if now < approval.expires_at:
            return Refused(409, f"approval {approval.approval_id} expires at {approval.expires_at}")
        return approval.model_copy(update={"status": "expired", "decided_at": now})
    if now >= approval.expires_at:
        return Refused(409, f"approval {approval.approval_id} expired at {approval.expires_at}")
    principal = action.principal
    if not (("*" in approval.approvers) or principal in approval.approvers):
        return Refused(403, f"{principal} is not an approver of {approval.tool!r} calls")
    if not approval.self_approval and principal == approval.started_by:
        return Refused(403, f"{principal} started this run and may not approve its calls")
    if any(d.principal == principal for d in approval.decisions):
        return Refused(409, f"{principal} already decided approval {approval.approval_id}")
    decisions = [*approval.decisions, action]
    update: dict[str, object] = {"decisions": decisions}
    if action.verdict == "reject":
        update.update(
            status="rejected",
            decided_by=[principal],
            decision_reason=action.reason,
            decided_at=now,
        )
        return approval.model_copy(update=update)
    approvers = [d.principal for d in decisions if d.verdict == "approve"]
    if action.arguments is not None:
        update["edited_arguments"] = action.arguments
    if len(approvers) >= approval.quorum:
        update.update(
            status="approved",
            decided_by=approvers,
            decision_reason=action.reason,
            decided_at=now,
            remember=next((d.remember for d in reversed(decisions) if d.remember), None),
        )
    return approval.model_copy(update=update)


@dataclass(frozen=True)
class ApprovalChange:
    """What one decision or expiry writes and publishes. ``approval`` is as stored after;
    ``written``: the approval document changed. ``call`` / ``run``: the documents to write
    (``None``: unchanged). ``halt``: the caller ends the run ``APPROVAL_TIMEOUT``."""

    approval: ApprovalRecord
    written: bool
    refused: Refused | None = None
    call: ToolCallRecord | None = None
    run: RunRecord | None = None
    events: list[RunEvent] = field(default_factory=list)
    publish: list[OutboxMessage] = field(default_factory=list)
    grant: ApprovalGrant | None = None
    halt: bool = False


def rejection_text(approval: ApprovalRecord) -> str:
    who = ", ".join(approval.decided_by) or "an approver"
    reason = approval.decision_reason or "no reason given"
    return (
        f"The call to {approval.tool} was rejected by {who}: {reason}. It was not executed; "
        "do not retry it unchanged."
    )


def expiry_text(approval: ApprovalRecord) -> str:
    waited = (approval.expires_at - approval.requested_at).total_seconds()
    return (
        f"No approver decided on the call to {approval.tool} within {waited:g} s (it expired "
        f"at {approval.expires_at.isoformat()}), so it was denied automatically and not executed."
    )


def halt_stop(approval: ApprovalRecord) -> Stop:
    waited = (approval.expires_at - approval.requested_at).total_seconds()
    return Stop(
        LoopExit.APPROVAL_TIMEOUT,
        f"approval {approval.approval_id} for {approval.tool} expired after {waited:g} s "
        "with no decision (on_timeout: halt)",
    )


def change(
    approval: ApprovalRecord,
    run: RunRecord,
    call: ToolCallRecord,
    action: Action,
    now: datetime,
) -> ApprovalChange:
    """Apply ``action`` to ``approval`` and settle what it decides (see the module)."""
    judged = judge(approval, action, now)
    if isinstance(judged, Refused):
        if action != "expire" and not approval.final and now >= approval.expires_at:
            # Too late for a person: the expiry wins, in this same write.
            expired = change(approval, run, call, "expire", now)
            late = Refused(409, f"approval expired at {approval.expires_at.isoformat()}")
            return replace(expired, refused=late)
        return ApprovalChange(approval=approval, written=False, refused=judged)
    if not judged.final:
        return ApprovalChange(approval=judged, written=True)  # waiting for the quorum
    listed = any(p.kind == "approval" and p.id == approval.approval_id for p in run.pending)
    if not listed or run.finished or run.seq != approval.seq + 1:
        # The run has moved on (cancelled, timed out): the decision is recorded, nothing runs.
        return ApprovalChange(approval=judged, written=True)
    if judged.status == "approved":
        arguments = judged.edited_arguments
        approved_call = (
            call.call
            if arguments is None
            else call.call.model_copy(update={"arguments": arguments})
        )
        pending = [
            PendingItem(kind="tool_call", id=p.id, deadline=run.deadline_at)
            if p.kind == "approval" and p.id == approval.approval_id
            else p
            for p in run.pending
        ]
        grant = None
        if judged.remember is not None:
            grant = ApprovalGrant(
                scope=judged.remember,
                key=run.run_id if judged.remember == "run" else run.agent_id,
                tool=judged.tool,
                granted_by=list(judged.decided_by),
                approval=judged.doc_id,
                created_at=now,
                expires_at=(
                    run.deadline_at or now + timedelta(days=1)
                    if judged.remember == "run"
                    else now + timedelta(seconds=judged.remember_seconds)
                ),
            )
        return ApprovalChange(
            approval=judged,
            written=True,
            call=call.model_copy(update={"approval": "approved", "call": approved_call}),
            run=run.model_copy(
                update={"pending": pending, "status": waits.status_of(pending), "updated_at": now}
            ),
            publish=[
                OutboxMessage.of(
                    "tools", ToolMessage(run_id=run.run_id, seq=call.seq, index=call.index)
                )
            ],
            grant=grant,
        )
    if judged.status == "expired" and judged.on_timeout == "halt":
        return ApprovalChange(
            approval=judged,
            written=True,
            call=call.model_copy(update={"approval": "expired"}),
            halt=True,
        )
    text = rejection_text(judged) if judged.status == "rejected" else expiry_text(judged)
    done = call.finished_with(text, True, None).model_copy(update={"approval": judged.status})
    wake = OutboxMessage.of("steps", StepMessage(run_id=run.run_id, seq=run.seq))
    barrier = waits.resolve(
        run, "approval", approval.approval_id, seq=approval.seq, already_resolved=False, wake=wake
    )
    return ApprovalChange(
        approval=judged,
        written=True,
        call=done,
        run=run.model_copy(
            update={
                "pending": barrier.pending,
                "outbox": barrier.outbox,
                "status": waits.status_of(barrier.pending),
                "updated_at": now,
            }
        ),
        events=[
            ToolResultEvent(
                run_id=run.run_id,
                seq=call.seq,
                id=event_id(call.seq, "c", call.index),
                timestamp=now,
                call_id=call.call.id,
                tool_name=call.call.name,
                result=text,
                is_error=True,
            )
        ],
        publish=barrier.publish,
    )


def granted(grants: list[ApprovalGrant], tool: str, now: datetime) -> bool:
    """A remembered approval covers calls of ``tool`` now."""
    return any(g.tool == tool and g.expires_at > now for g in grants)
