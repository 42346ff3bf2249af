"""Persistence ports: runs (the durable state machine), agents, dead letters, budgets' counters.

Every method that moves a run is one transaction in the adapter: it checks the run is at the
expected ``seq`` and applies everything or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import JsonValue

from cloudagents.domain.agents import AgentDefinition, AgentVersion
from cloudagents.domain.approvals import ApprovalGrant, ApprovalRecord, ApprovalStatus
from cloudagents.domain.conversations import ConversationRecord
from cloudagents.domain.events import RunEvent
from cloudagents.domain.handoffs import HandoffOffer
from cloudagents.domain.messages import Message
from cloudagents.domain.runs import (
    WAKE_HOLD_SECONDS,
    AuditRecord,
    DeadLetter,
    Interaction,
    ModelCallRecord,
    OutboxMessage,
    PendingKind,
    RunRecord,
    RunStatus,
    ToolCallRecord,
    WakeClaim,
)
from cloudagents.domain.steps import StepCommit
from cloudagents.engine.approvals import ApprovalChange

ApprovalRule = Callable[[ApprovalRecord, RunRecord, ToolCallRecord], ApprovalChange]
"""``engine.approvals.change`` with its action and time bound: what to write, from what is read."""

ClaimOutcome = Literal["first", "taken_over", "held", "done"]


@dataclass(frozen=True)
class ToolClaim:
    """What a delivery of a tool message may do with the call.

    ``first``: it moved the call from ``pending`` to ``running`` and holds the lease.
    ``taken_over``: the call was ``running`` but its lease had passed (the delivery that started
    it died or overran the tool's timeout); this delivery now holds a new lease.
    ``held``: another delivery holds a live lease (nothing was written).
    ``done``: the result is recorded (nothing was written).
    """

    record: ToolCallRecord
    outcome: ClaimOutcome

    @staticmethod
    def decide(
        call: ToolCallRecord, now: datetime, lease_seconds: float
    ) -> tuple[ToolCallRecord | None, ClaimOutcome]:
        """The record to write (``None``: write nothing) and the outcome, for a claim at ``now``.

        Both stores apply this inside their transaction, so the rule lives in one place."""
        if call.status == "done":
            return None, "done"
        if call.status == "running" and call.lease_until is not None and call.lease_until > now:
            return None, "held"
        updated = call.model_copy(
            update={
                "status": "running",
                "attempts": call.attempts + 1,
                "started_at": now,
                "lease_until": now + timedelta(seconds=lease_seconds),
            }
        )
        return updated, "first" if call.status == "pending" else "taken_over"


@dataclass(frozen=True)
class ToolFinish:
    """The outcome of recording a tool result."""

    record: ToolCallRecord
    run: RunRecord
    newly_finished: bool
    wake: bool = False
    outbox: list[OutboxMessage] = field(default_factory=list)


class RunStore(Protocol):
    """``agent_runs`` and their sub-collections, plus ``interactions``."""

    async def create_run(self, run: RunRecord, messages: list[Message]) -> bool:
        """Create the run with its opening messages; ``False`` if it already exists."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self,
        *,
        agent_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        parent_run_id: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; ``parent_run_id``: the runs it started (calls and handoffs)."""
        ...

    async def messages(self, run_id: str, *, start: int = 0) -> list[Message]: ...

    async def recent_messages(self, run_id: str, limit: int) -> list[Message]: ...

    async def tool_calls(
        self, run_id: str, seq: int, *, unclaimed: bool = True
    ) -> list[ToolCallRecord]:
        """Step ``seq``'s calls. ``unclaimed=False``: a reader that knows every call of the step
        was claimed (its results are all in) need not see the ones never claimed, which a store
        may keep apart until their first claim (Firestore: in the step document)."""
        ...

    async def get_tool_call(self, run_id: str, seq: int, index: int) -> ToolCallRecord | None: ...

    async def commit_step(self, commit: StepCommit) -> RunRecord | None:
        """Apply the commit and return the run after it, or ``None`` if the run moved on."""
        ...

    async def start_tool_call(
        self,
        run_id: str,
        seq: int,
        index: int,
        *,
        lease_seconds: float,
        committed: ToolCallRecord | None = None,
    ) -> ToolClaim | None:
        """Claim the call for ``lease_seconds`` by ``ToolClaim.decide``: a claim that takes it
        marks it ``running``, counts the attempt and sets the lease. ``committed``: the call as
        its step committed it (carried by its dispatch message), if the claim may create its
        record from it: the first claim creates, a later one finds it and decides from it.
        ``None`` if the call does not exist."""
        ...

    async def defer_tool_call(
        self, run_id: str, seq: int, index: int, *, until: datetime, window: int
    ) -> ToolCallRecord | None:
        """Record on a ``pending`` call that it holds a rate-limit slot in ``window`` and is
        delivered again at ``until``; a call no longer pending is left as it is. Returns the
        record as stored; ``None`` if the call does not exist."""
        ...

    async def save_tool_result(
        self,
        run_id: str,
        seq: int,
        index: int,
        *,
        result: JsonValue,
        is_error: bool,
        result_uri: str | None,
    ) -> ToolCallRecord | None:
        """Mark the call ``done`` with this result unless it already is (the first result
        wins), touching only the tool-call document, so a result that exists is durable before
        the run document (hot while a step's results arrive) is written. Returns the record as
        stored; ``None`` if the call does not exist."""
        ...

    async def finish_tool_call(
        self,
        run_id: str,
        seq: int,
        index: int,
        *,
        result: JsonValue,
        is_error: bool,
        result_uri: str | None,
        wake: OutboxMessage,
        kind: PendingKind = "tool_call",
    ) -> ToolFinish | None:
        """Take the call (a pending item of ``kind``: ``tool_call``, or ``child_run`` for a call
        to another agent) off the run's pending list once; the call that
        empties the list stores ``wake`` in the run's outbox and says ``wake=True``. The result
        is recorded here too unless ``save_tool_result`` recorded one already (the stored one
        wins). ``None`` if the call does not exist."""
        ...

    async def record_model_call(self, record: ModelCallRecord) -> None: ...

    async def model_calls(self, run_id: str) -> list[ModelCallRecord]: ...

    async def cancel_run(self, run_id: str, reason: str) -> RunRecord | None:
        """Finish an unfinished run ``CANCELLED`` (moving its ``seq`` so in-flight work is
        stale); returns the run as it is after, ``None`` if unknown."""
        ...

    async def events(self, run_id: str, *, after: str | None = None) -> list[RunEvent]:
        """Events of the run in order, those after the event id ``after``."""
        ...

    async def add_events(self, run_id: str, events: list[RunEvent]) -> None:
        """Store events written outside a step commit (streamed chunks)."""
        ...

    async def interactions(self, run_id: str) -> list[Interaction]: ...

    async def get_approval(self, run_id: str, approval_id: str) -> ApprovalRecord | None: ...

    async def list_approvals(
        self, *, run_id: str | None = None, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        """Approvals, oldest request first: one run's, or across runs (the inbox)."""
        ...

    async def change_approval(
        self, run_id: str, approval_id: str, rule: ApprovalRule
    ) -> ApprovalChange | None:
        """Read the approval, its run and its tool call, and write what ``rule`` returns
        (approval, call, run, events, grant) at once, only if none of the three changed since
        read. ``None`` if any of them does not exist."""
        ...

    async def approval_grants(
        self, run_id: str, agent_id: str, tools: list[str]
    ) -> list[ApprovalGrant]:
        """The remembered approvals for ``tools`` in this run or for this agent."""
        ...

    async def conversation_messages(self, conversation_id: str, *, last: int) -> list[Message]:
        """The conversation's last ``last`` messages, oldest first (none if it is new)."""
        ...

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    async def list_conversations_for_agent(
        self, agent_id: str, *, limit: int = 100
    ) -> list[ConversationRecord]:
        """Seed 004's ``list_conversations_for_agent``: the agent's conversations, most
        recently updated first."""
        ...

    async def claim_conversation(
        self, conversation_id: str, *, run_id: str, agent_id: str, message: Message
    ) -> ConversationRecord:
        """Let ``run_id`` hold the conversation (creating it) and append its user ``message``;
        a repeat claim by the same run changes nothing. Raises ``ConversationBusy`` while
        another unfinished run holds it (a finished holder's claim is taken over). A run's
        finishing commit appends its answer and lets go (``StepCommit.conversation_reply``)."""
        ...

    async def claim_wake(
        self, run_id: str, key: str, hold_seconds: float = WAKE_HOLD_SECONDS
    ) -> WakeClaim:
        """Claim the wake-up ``key`` of the run: ``claimed`` for the delivery that does the
        work, ``done`` for a duplicate of one finished (``finish_wake``), ``held`` while another
        delivery has it. One document per wake-up (not the run's): duplicated wake-up tasks (the
        Cloud Tasks emulator does not de-duplicate) are told apart from the first, and a claim
        not finished within ``hold_seconds`` (its handler died) is taken over by one delivery."""
        ...

    async def finish_wake(self, run_id: str, key: str) -> None:
        """The claimed wake-up ``key`` did its work and scheduled the next one."""
        ...


class AgentStore(Protocol):
    """``agents/{id}``: agent definitions, each with its history of versions."""

    async def put_agent(self, definition: AgentDefinition) -> None:
        """Store or replace; a changed definition appends a version to its history."""
        ...

    async def get_agent(self, agent_id: str) -> AgentDefinition | None: ...

    async def list_agents(self) -> list[AgentDefinition]: ...

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove the definition (its history stays, ending with the deletion); ``False`` if
        there was none. A run pinned to a version finishes on it; a queued run or one started
        before versions existed ends ``ERROR`` at its next step."""
        ...

    async def agent_history(self, agent_id: str) -> list[AgentVersion]:
        """Every version of the definition, oldest first (a deletion has no definition)."""
        ...

    async def latest_version(self, agent_id: str) -> AgentVersion | None:
        """The last version of the definition (a deletion has none); ``None`` for an agent
        stored before versions existed. What a starting run pins (``RunRecord.agent_versions``)."""
        ...

    async def get_agent_version(self, agent_id: str, version: int) -> AgentDefinition | None:
        """The definition as it was at ``version`` (``None``: that version is a deletion, or
        there is no such version). Versions never change, so a process may keep them."""
        ...


class AuditStore(Protocol):
    """``audit_log``: access decisions (seed 004's audit logging)."""

    async def record_audit(self, record: AuditRecord) -> None: ...

    async def list_audit(self, limit: int = 100) -> list[AuditRecord]: ...


class DeadLetterStore(Protocol):
    """``dead_letters/{id}``: messages that can never be applied, with the reason."""

    async def record_dead_letter(self, letter: DeadLetter) -> None: ...

    async def list_dead_letters(
        self, limit: int = 100, *, run_id: str | None = None
    ) -> list[DeadLetter]:
        """The newest first; with ``run_id``, only that run's."""
        ...

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None: ...

    async def mark_replayed(self, letter_id: str) -> None: ...


@dataclass(frozen=True)
class Claim:
    """The result of trying to claim an offer."""

    offer: HandoffOffer
    claimed_now: bool


class HandoffStore(Protocol):
    """``handoff_offers/{offer_id}``: claims and expiry are transactions on the offer."""

    async def get_offer(self, offer_id: str) -> HandoffOffer | None: ...

    async def list_open_offers(self, limit: int = 100) -> list[HandoffOffer]: ...

    async def claim_offer(
        self, offer_id: str, *, agent_id: str, target_run_id: str, now: datetime
    ) -> Claim | None:
        """Claim an open, unexpired offer once. ``claimed_now`` is False when it was already
        claimed (the stored claim is returned) or can no longer be claimed."""
        ...

    async def expire_offer(self, offer_id: str, *, now: datetime) -> HandoffOffer | None:
        """Mark an open offer past its ``expires_at`` expired; returns the offer as stored."""
        ...

    async def mark_expiry_scheduled(self, offer_id: str, task_name: str) -> None: ...

    async def update_source(
        self, run_id: str, *, status: str, child_run_id: str | None = None
    ) -> None:
        """Record on the source run what became of its offer (and the target run, if any)."""
        ...
