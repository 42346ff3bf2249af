"""What a step writes, planned by pure functions: from the run, the agent, the step's new
messages, the model's reply and the decided outcome (``engine/step.py``) to the ``StepCommit``
(messages, tool-call records and pending items, the handoff offer, events, the interaction, the
outbox, the result) that a run store applies atomically. Closed over ``StepOutcome`` with
``assert_never``: a new outcome does not type-check until it is planned here. The executor
(``runtime/executor.py``) reads, makes the model turn and commits what these return; nothing here
reads a clock, a store or the network (``StepContext`` carries what the plan needs to know).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.events import (
    ApprovalRequested,
    Completed,
    Failed,
    HandoffEvent,
    RunEvent,
    ThinkingStatus,
    ToolCallEvent,
    ToolResultEvent,
    event_id,
)
from cloudagents.domain.handoffs import HandoffOffer, HandoffTarget, OfferMessage
from cloudagents.domain.messages import Message, ModelResponse, ToolCall
from cloudagents.domain.results import LoopExit, LoopResult, RunProgress
from cloudagents.domain.runs import (
    Interaction,
    OutboxMessage,
    PendingItem,
    RunRecord,
    RunStatus,
    SnapshotMessage,
    StepMessage,
    ToolCallRecord,
    ToolMessage,
    WakeUp,
    snapshot_object_name,
)
from cloudagents.domain.steps import StepCommit
from cloudagents.engine import approvals, transitions, waits
from cloudagents.engine import calls as agent_calls
from cloudagents.engine.approvals import Gate
from cloudagents.engine.calls import ChildCall
from cloudagents.engine.step import (
    CallTools,
    Finish,
    HandOff,
    RunAgain,
    StepOutcome,
    Stop,
    describe,
)

Plan = tuple[StepCommit, str]
"""A step's commit, and a label for logs and answers (``tools:2``, ``finished:SATISFIED``)."""


@dataclass(frozen=True)
class StepContext:
    """What a plan needs from outside the run: the time it is planned at, how long a wait goes
    before its first wake-up, and the bucket a handoff's context snapshot is written to."""

    now: datetime
    wake_seconds: float
    context_bucket: str


def step_message(run_id: str, seq: int) -> OutboxMessage:
    return OutboxMessage.of("steps", StepMessage(run_id=run_id, seq=seq))


def snapshot_message(run: RunRecord, seq: int, new_messages: list[Message]) -> OutboxMessage:
    """Snapshot the run as of ``seq``, once the step's ``new_messages`` are committed."""
    return OutboxMessage.of(
        "snapshots",
        SnapshotMessage(
            run_id=run.run_id,
            seq=seq,
            agent_id=run.agent_id,
            message_count=run.message_count + len(new_messages),
        ),
    )


def wake_message(run: RunRecord, seq: int, now: datetime, wake_seconds: float) -> OutboxMessage:
    """The wake-up a step that waits commits with itself: ``wake_seconds`` from now, or the
    run's deadline if that comes first (``runtime/wakeups.py`` says what it does)."""
    at = now + timedelta(seconds=wake_seconds)
    if run.deadline_at is not None:
        at = min(at, run.deadline_at)
    wake = WakeUp(run_id=run.run_id, seq=seq, at=at)
    return OutboxMessage.of("wakeups", wake)


def timed_out(run: RunRecord, now: datetime, waiting_for: str | None = None) -> Stop | None:
    """``Stop(ERROR)`` with the reason once a run is past its deadline, else ``None``."""
    if run.deadline_at is None or now < run.deadline_at:
        return None
    timeout = (run.deadline_at - run.created_at).total_seconds()
    doing = f"waiting for {waiting_for}" if waiting_for else f"at step {run.seq}"
    return Stop(LoopExit.ERROR, f"timed out after {timeout:g} s {doing}")


def plan_outcome(
    at: StepContext,
    run: RunRecord,
    agent: AgentDefinition,
    progress: RunProgress,
    new_messages: list[Message],
    reply: ModelResponse,
    outcome: StepOutcome,
) -> Plan:
    seq = run.seq
    interaction = Interaction(
        run_id=run.run_id,
        created_at=at.now,
        agent_id=run.agent_id,
        seq=seq,
        decision=describe(outcome),
        total_tokens=reply.usage.total_tokens,
        tool_calls=[c.name for c in reply.tool_calls],
    )
    match outcome:
        case Finish(payload):
            result = progress.result(LoopExit.SATISFIED, payload)
            return plan_finish(at, run, progress, new_messages, result, interaction)
        case Stop():
            return plan_stop(at, run, progress, new_messages, outcome, interaction)
        case RunAgain(feedback):
            if feedback:
                new_messages.append(Message(role="user", content=feedback))
            commit = StepCommit(
                run_id=run.run_id,
                expected_seq=seq,
                new_messages=new_messages,
                status=RunStatus.RUNNING,
                progress=progress,
                outbox=[
                    step_message(run.run_id, seq + 1),
                    snapshot_message(run, seq + 1, new_messages),
                ],
                interaction=interaction,
            )
            return commit, "run-again"
        case CallTools(calls, gated, children):
            return plan_tool_calls(
                at, run, agent, progress, new_messages, calls, gated, interaction, children
            )
        case HandOff(target):
            return plan_handoff(at, run, agent, progress, new_messages, target, interaction)
        case _:
            assert_never(outcome)


def plan_tool_calls(
    at: StepContext,
    run: RunRecord,
    agent: AgentDefinition,
    progress: RunProgress,
    new_messages: list[Message],
    calls: tuple[ToolCall, ...],
    gated: Mapping[int, Gate],
    interaction: Interaction,
    children: Mapping[int, ChildCall] | None = None,
) -> Plan:
    """The step waits for its tool calls: each is dispatched at once, except a gated one, which
    gets an approval document, an ``approval`` pending item (deadline: its expiry) and an expiry
    wake-up instead, and is dispatched once approved (``engine/approvals.py``); and a call to a
    peer agent, which starts a child run and waits for it as a ``child_run`` item, or — when a
    check refused it — is done at once with the refusal as its error result
    (``engine/calls.py``)."""
    seq = run.seq
    children = children or {}
    records = [
        ToolCallRecord(
            run_id=run.run_id,
            seq=seq,
            index=i,
            call=call,
            idempotency_key=f"{run.run_id}:{seq}:{i}",
            approval="required" if i in gated else None,
            child_run_id=children[i].run_id if i in children else None,
            child_agent_id=children[i].agent_id if i in children else None,
        )
        for i, call in enumerate(calls)
    ]
    refused = {i: c.problem for i, c in children.items() if c.problem is not None}
    for i, problem in refused.items():
        records[i] = records[i].model_copy(
            update={"status": "done", "result": problem, "is_error": True, "finished_at": at.now}
        )
    started = {i: c for i, c in children.items() if c.problem is None}
    requests = [
        approvals.request(run, agent.approval, r, gated[r.index], at.now)
        for r in records
        if r.index in gated
    ]
    expiry = {a.approval_id: a.expires_at for a in requests}
    deadline = run.deadline_at  # a tool call is waited for until the run times out
    pending = [
        PendingItem(kind="approval", id=r.doc_id, deadline=expiry[r.doc_id])
        if r.doc_id in expiry
        else PendingItem(
            kind="child_run" if r.index in started else "tool_call", id=r.doc_id, deadline=deadline
        )
        for r in records
        if r.index not in refused
    ]
    dispatch = [
        agent_calls.child_intent(
            run,
            seq,
            r.index,
            started[r.index].run_id,
            started[r.index].agent_id,
            started[r.index].message,
        )
        if r.index in started
        else OutboxMessage.of("tools", ToolMessage.of(r))
        for r in records
        if r.doc_id not in expiry and r.index not in refused
    ]
    if not pending:
        dispatch.append(step_message(run.run_id, seq + 1))  # every call refused: step on
    expiries = [
        OutboxMessage.of(
            "wakeups",
            WakeUp(run_id=run.run_id, seq=seq + 1, approval=a.approval_id, at=a.expires_at),
        )
        for a in requests
    ]
    events: list[RunEvent] = [
        ToolCallEvent(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", i),
            call_id=r.call.id,
            tool_name=r.call.name,
            arguments=r.call.arguments,
        )
        for i, r in enumerate(records)
    ]
    events.extend(
        ApprovalRequested(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", len(events)),
            approval_id=a.approval_id,
            call_id=a.call_id,
            tool_name=a.tool,
            arguments=a.arguments,
            risk=a.risk,
            expires_at=a.expires_at,
            approvers=a.approvers,
        )
        for a in requests
    )
    events.extend(
        ToolResultEvent(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "c", i),
            call_id=records[i].call.id,
            tool_name=records[i].call.name,
            result=problem,
            is_error=True,
        )
        for i, problem in sorted(refused.items())
    )
    running = ", ".join(
        f"{r.call.name}#{r.index}"
        for r in records
        if r.doc_id not in expiry and r.index not in refused and r.index not in started
    )
    calling = ", ".join(f"{c.agent_id}#{i}" for i, c in sorted(started.items()))
    waiting = ", ".join(f"{a.tool}#{a.index}" for a in requests)
    status = "; ".join(
        part
        for part in (
            f"running tools: {running}" if running else "",
            f"waiting for agents: {calling}" if calling else "",
            f"waiting for approval: {waiting}" if waiting else "",
        )
        if part
    )
    events.append(
        ThinkingStatus(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", len(events)),
            status=status,
        )
    )
    wake = wake_message(run, seq + 1, at.now, at.wake_seconds)
    commit = StepCommit(
        run_id=run.run_id,
        expected_seq=seq,
        new_messages=new_messages,
        status=waits.status_of(pending),
        progress=progress,
        pending=pending,
        tool_calls=records,
        approvals=requests,
        outbox=[*dispatch, snapshot_message(run, seq + 1, new_messages), wake, *expiries],
        interaction=interaction,
        events=events,
    )
    label = f"tools:{len(records)}" + (f" awaiting-approval:{len(requests)}" if requests else "")
    return commit, label


def plan_handoff(
    at: StepContext,
    run: RunRecord,
    agent: AgentDefinition,
    progress: RunProgress,
    new_messages: list[Message],
    target: HandoffTarget,
    interaction: Interaction,
) -> Plan:
    depth = run.chain_depth + 1
    if depth > agent.max_chain_depth:
        stop = Stop(
            LoopExit.ERROR,
            f"handoff refused: chain depth {depth} exceeds max_chain_depth={agent.max_chain_depth}",
        )
        return plan_stop(at, run, progress, new_messages, stop, interaction)
    now = at.now
    offer = HandoffOffer(
        offer_id=f"offer-{run.run_id}-{run.seq}",
        source_run_id=run.run_id,
        source_agent=run.agent_id,
        required_capabilities=target.required_capabilities,
        message=target.message,
        preferred_agent=target.preferred_agent,
        context_uri=(f"gs://{at.context_bucket}/{snapshot_object_name(run.run_id, run.seq + 1)}"),
        chain_depth=depth,
        created_at=now,
        expires_at=now + timedelta(seconds=target.ttl_seconds),
    )
    payload: dict[str, Any] = {
        "offer_id": offer.offer_id,
        "required_capabilities": list(target.required_capabilities),
        "expires_at": offer.expires_at.isoformat(),
        "handoff_target": target.model_dump(mode="json", exclude_none=True),
    }
    result = progress.result(LoopExit.HANDOFF, payload)
    seq = run.seq
    events: list[RunEvent] = [
        HandoffEvent(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", 0),
            offer_id=offer.offer_id,
            required_capabilities=list(target.required_capabilities),
        ),
        Completed(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", 1),
            exit=result.exit.value,
            total_tokens=progress.total_tokens,
            prompt_tokens=progress.prompt_tokens,
            completion_tokens=progress.completion_tokens,
        ),
    ]
    commit = StepCommit(
        run_id=run.run_id,
        expected_seq=seq,
        new_messages=new_messages,
        status=RunStatus.FINISHED,
        progress=progress,
        result=result,
        # The snapshot first: the broker transfers the context from it.
        outbox=[
            snapshot_message(run, seq + 1, new_messages),
            OutboxMessage.of("handoff", OfferMessage(offer_id=offer.offer_id)),
            *agent_calls.answer_parent(run),
            *transitions.answer_token(run),
        ],
        interaction=interaction,
        events=events,
        handoff_offer=offer,
    )
    return commit, "handoff"


def plan_stop(
    at: StepContext,
    run: RunRecord,
    progress: RunProgress,
    new_messages: list[Message],
    stop: Stop,
    interaction: Interaction | None = None,
) -> Plan:
    # Every stop's reason is also in ``errors`` (and on the stored progress), once.
    progress = progress.with_reason(stop.exit, stop.reason)
    result = progress.result(stop.exit, {"reason": stop.reason})
    return plan_finish(at, run, progress, new_messages, result, interaction)


def plan_finish(
    at: StepContext,
    run: RunRecord,
    progress: RunProgress,
    new_messages: list[Message],
    result: LoopResult,
    interaction: Interaction | None,
) -> Plan:
    seq = run.seq
    final_text = next(
        (m.content or "" for m in reversed(new_messages) if m.role == "assistant"), ""
    )
    event: RunEvent
    if result.exit in (LoopExit.SATISFIED, LoopExit.HANDOFF):
        event = Completed(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", 0),
            exit=result.exit.value,
            final_response=final_text,
            total_tokens=result.total_tokens,
            prompt_tokens=progress.prompt_tokens,
            completion_tokens=progress.completion_tokens,
        )
    else:
        event = Failed(
            run_id=run.run_id,
            timestamp=at.now,
            seq=seq,
            id=event_id(seq, "b", 0),
            exit=result.exit.value,
            error=str(result.payload.get("reason", "")),
        )
    commit = StepCommit(
        run_id=run.run_id,
        expected_seq=seq,
        new_messages=new_messages,
        status=RunStatus.FINISHED,
        progress=progress,
        result=result,
        outbox=[
            snapshot_message(run, seq + 1, new_messages),
            *agent_calls.answer_parent(run),
            *transitions.answer_token(run),
        ],
        interaction=interaction,
        events=[event],
        conversation_reply=(
            Message(role="assistant", content=final_text or json.dumps(result.payload))
            if run.conversation_id is not None and result.exit is LoopExit.SATISFIED
            else None
        ),
    )
    return commit, f"finished:{result.exit.value}"
