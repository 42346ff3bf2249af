"""In-memory run, agent and dead-letter stores with the same transactional rules as Firestore."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime

from pydantic import JsonValue

from cloudagents.domain.agents import AgentDefinition, AgentVersion
from cloudagents.domain.approvals import (
    ApprovalGrant,
    ApprovalRecord,
    ApprovalStatus,
    grant_doc_ids,
)
from cloudagents.domain.conversations import (
    ConversationRecord,
    claimed,
    holder_done,
    released,
)
from cloudagents.domain.events import RunEvent, tool_result_event
from cloudagents.domain.handoffs import HandoffOffer
from cloudagents.domain.messages import Message
from cloudagents.domain.results import LoopExit
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
    tool_call_doc_id,
    utcnow,
)
from cloudagents.domain.steps import StepCommit
from cloudagents.engine import waits
from cloudagents.engine.approvals import ApprovalChange
from cloudagents.ports.stores import ApprovalRule, Claim, ToolClaim, ToolFinish


class InMemoryRunStore:
    """Runs in dicts; one lock stands in for Firestore transactions."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.runs: dict[str, RunRecord] = {}
        self.transcripts: defaultdict[str, list[Message]] = defaultdict(list)
        self.calls: dict[tuple[str, str], ToolCallRecord] = {}
        self.model_call_records: dict[tuple[str, str], ModelCallRecord] = {}
        self.interaction_records: dict[str, Interaction] = {}
        self.event_records: defaultdict[str, dict[str, RunEvent]] = defaultdict(dict)
        self.offers: dict[str, HandoffOffer] = {}
        self.wakes: dict[tuple[str, str], tuple[float, bool]] = {}
        self.approval_records: dict[str, ApprovalRecord] = {}
        self.conversations: dict[str, ConversationRecord] = {}
        self.conversation_log: defaultdict[str, list[Message]] = defaultdict(list)
        self.grants: dict[str, ApprovalGrant] = {}

    async def create_run(self, run: RunRecord, messages: list[Message]) -> bool:
        async with self._lock:
            if run.run_id in self.runs:
                return False
            self.runs[run.run_id] = run.model_copy(update={"message_count": len(messages)})
            self.transcripts[run.run_id] = list(messages)
            return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self.runs.get(run_id)
        return run.model_copy(deep=True) if run else None

    async def list_runs(
        self,
        *,
        agent_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        parent_run_id: str | None = None,
    ) -> list[RunRecord]:
        runs = [
            r
            for r in self.runs.values()
            if (agent_id is None or r.agent_id == agent_id)
            and (status is None or r.status == status)
            and (parent_run_id is None or r.parent_run_id == parent_run_id)
        ]
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return [r.model_copy(deep=True) for r in runs[:limit]]

    async def messages(self, run_id: str, *, start: int = 0) -> list[Message]:
        return list(self.transcripts[run_id][start:])

    async def recent_messages(self, run_id: str, limit: int) -> list[Message]:
        return list(self.transcripts[run_id][-limit:]) if limit > 0 else []

    async def tool_calls(
        self, run_id: str, seq: int, *, unclaimed: bool = True
    ) -> list[ToolCallRecord]:
        prefix = f"{seq:06d}-"
        found = [
            c for (rid, doc), c in self.calls.items() if rid == run_id and doc.startswith(prefix)
        ]
        return sorted((c.model_copy(deep=True) for c in found), key=lambda c: c.index)

    async def get_tool_call(self, run_id: str, seq: int, index: int) -> ToolCallRecord | None:
        call = self.calls.get((run_id, tool_call_doc_id(seq, index)))
        return call.model_copy(deep=True) if call else None

    async def commit_step(self, commit: StepCommit) -> RunRecord | None:
        async with self._lock:
            run = self.runs.get(commit.run_id)
            if run is None or run.seq != commit.expected_seq or run.finished:
                return None
            # Validate the new run first, so a bad commit changes nothing (as a transaction).
            validated = commit.applied_to(run)
            self.transcripts[run.run_id].extend(commit.new_messages)
            for call in commit.tool_calls:
                self.calls[(run.run_id, call.doc_id)] = call
            if commit.interaction is not None:
                key = f"{run.run_id}-{commit.interaction.seq:06d}"
                self.interaction_records[key] = commit.interaction.model_copy(
                    update={"applied_model_call": commit.applied_model_call}
                )
            for event in commit.events:
                self.event_records[run.run_id][event.id] = event
            if commit.handoff_offer is not None:
                self.offers[commit.handoff_offer.offer_id] = commit.handoff_offer
            for approval in commit.approvals:
                self.approval_records[approval.doc_id] = approval
            if validated.finished and run.conversation_id in self.conversations:
                conversation = self.conversations[run.conversation_id]
                if conversation.active_run_id == run.run_id:
                    reply = commit.conversation_reply
                    if reply is not None:
                        self.conversation_log[run.conversation_id].append(reply)
                    self.conversations[run.conversation_id] = released(
                        conversation, run.run_id, reply is not None, utcnow()
                    )
            applied = self.model_call_records.get((run.run_id, commit.applied_model_call or ""))
            if applied is not None:
                self.model_call_records[(run.run_id, applied.attempt_id)] = applied.model_copy(
                    update={"applied": True}
                )
            self.runs[run.run_id] = validated
            return self.runs[run.run_id].model_copy(deep=True)

    async def start_tool_call(
        self,
        run_id: str,
        seq: int,
        index: int,
        *,
        lease_seconds: float,
        committed: ToolCallRecord | None = None,
    ) -> ToolClaim | None:
        # Every call is stored when its step commits here; ``committed`` is not needed.
        async with self._lock:
            key = (run_id, tool_call_doc_id(seq, index))
            call = self.calls.get(key)
            if call is None:
                return None
            updated, outcome = ToolClaim.decide(call, utcnow(), lease_seconds)
            if updated is not None:
                self.calls[key] = updated
            return ToolClaim((updated or call).model_copy(deep=True), outcome)

    async def defer_tool_call(
        self, run_id: str, seq: int, index: int, *, until: datetime, window: int
    ) -> ToolCallRecord | None:
        async with self._lock:
            key = (run_id, tool_call_doc_id(seq, index))
            call = self.calls.get(key)
            if call is None:
                return None
            if call.status == "pending":
                self.calls[key] = call.model_copy(
                    update={"deferred_until": until, "rate_window": window}
                )
            return self.calls[key].model_copy(deep=True)

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
        async with self._lock:
            key = (run_id, tool_call_doc_id(seq, index))
            call = self.calls.get(key)
            if call is None:
                return None
            if call.status != "done":
                self.calls[key] = call.finished_with(result, is_error, result_uri)
            return self.calls[key].model_copy(deep=True)

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
        async with self._lock:
            key = (run_id, tool_call_doc_id(seq, index))
            call, run = self.calls.get(key), self.runs.get(run_id)
            if call is None or run is None:
                return None
            barrier = waits.resolve(
                run,
                kind,
                call.doc_id,
                seq=seq,
                already_resolved=call.status == "done",
                wake=wake,
            )
            if not barrier.newly_resolved:
                return ToolFinish(
                    record=call.model_copy(deep=True),
                    run=run.model_copy(deep=True),
                    newly_finished=False,
                    wake=barrier.wake,
                    outbox=barrier.publish,
                )
            done = (
                call if call.status == "done" else call.finished_with(result, is_error, result_uri)
            )
            self.calls[key] = done
            self.runs[run_id] = run.model_copy(
                update={
                    "pending": barrier.pending,
                    "outbox": barrier.outbox,
                    "updated_at": utcnow(),
                }
            )
            return ToolFinish(
                record=done.model_copy(deep=True),
                run=self.runs[run_id].model_copy(deep=True),
                newly_finished=True,
                wake=barrier.wake,
                outbox=barrier.publish,
            )

    async def record_model_call(self, record: ModelCallRecord) -> None:
        self.model_call_records[(record.run_id, record.attempt_id)] = record

    async def model_calls(self, run_id: str) -> list[ModelCallRecord]:
        calls = [r for (rid, _), r in self.model_call_records.items() if rid == run_id]
        return sorted(calls, key=lambda r: (r.seq, r.created_at))

    async def cancel_run(self, run_id: str, reason: str) -> RunRecord | None:
        async with self._lock:
            run = self.runs.get(run_id)
            if run is None:
                return None
            if not run.finished:
                result = run.progress.stopped(LoopExit.CANCELLED, reason)
                run = run.model_copy(
                    update={
                        "seq": run.seq + 1,
                        "status": RunStatus.FINISHED,
                        "result": result,
                        "pending": [],
                        "outbox": [],
                        "updated_at": utcnow(),
                    }
                )
                self.runs[run_id] = run
            return run.model_copy(deep=True)

    async def events(self, run_id: str, *, after: str | None = None) -> list[RunEvent]:
        # Tool results are the saved calls themselves (a written one stands), as on Firestore.
        found: dict[str, RunEvent] = {
            event.id: event
            for event in (
                tool_result_event(c)
                for (rid, _), c in self.calls.items()
                if rid == run_id and c.status == "done"
            )
        }
        found.update(self.event_records[run_id])
        return [found[key] for key in sorted(found) if after is None or key > after]

    async def add_events(self, run_id: str, events: list[RunEvent]) -> None:
        for event in events:
            self.event_records[run_id][event.id] = event

    async def interactions(self, run_id: str) -> list[Interaction]:
        found = [i for key, i in self.interaction_records.items() if i.run_id == run_id]
        return sorted(found, key=lambda i: i.seq)

    async def conversation_messages(self, conversation_id: str, *, last: int) -> list[Message]:
        log = self.conversation_log.get(conversation_id, [])
        return list(log[-last:]) if last > 0 else []

    async def list_conversations_for_agent(
        self, agent_id: str, *, limit: int = 100
    ) -> list[ConversationRecord]:
        found = [c for c in self.conversations.values() if c.agent_id == agent_id]
        found.sort(key=lambda c: (c.updated_at, c.conversation_id), reverse=True)
        return [c.model_copy(deep=True) for c in found[:limit]]

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        found = self.conversations.get(conversation_id)
        return found.model_copy(deep=True) if found else None

    async def claim_conversation(
        self, conversation_id: str, *, run_id: str, agent_id: str, message: Message
    ) -> ConversationRecord:
        async with self._lock:
            record = self.conversations.get(conversation_id)
            holder = (
                self.runs.get(record.active_run_id) if record and record.active_run_id else None
            )
            now = utcnow()
            after = claimed(
                record,
                conversation_id,
                run_id=run_id,
                agent_id=agent_id,
                holder_finished=record is not None
                and holder_done(record, holder.finished if holder else None, now),
                now=now,
            )
            if after is None:
                assert record is not None
                return record.model_copy(deep=True)
            self.conversations[conversation_id] = after
            self.conversation_log[conversation_id].append(message)
            return after.model_copy(deep=True)

    async def get_approval(self, run_id: str, approval_id: str) -> ApprovalRecord | None:
        found = self.approval_records.get(f"{run_id}:{approval_id}")
        return found.model_copy(deep=True) if found else None

    async def list_approvals(
        self, *, run_id: str | None = None, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        found = [
            a
            for a in self.approval_records.values()
            if (run_id is None or a.run_id == run_id) and (status is None or a.status == status)
        ]
        found.sort(key=lambda a: (a.requested_at, a.doc_id))
        return [a.model_copy(deep=True) for a in found[:limit]]

    async def change_approval(
        self, run_id: str, approval_id: str, rule: ApprovalRule
    ) -> ApprovalChange | None:
        async with self._lock:
            approval = self.approval_records.get(f"{run_id}:{approval_id}")
            run = self.runs.get(run_id)
            call = self.calls.get((run_id, approval_id))
            if approval is None or run is None or call is None:
                return None
            change = rule(
                approval.model_copy(deep=True),
                run.model_copy(deep=True),
                call.model_copy(deep=True),
            )
            if change.written:
                self.approval_records[approval.doc_id] = change.approval
            if change.call is not None:
                self.calls[(run_id, approval_id)] = change.call
            if change.run is not None:
                self.runs[run_id] = change.run
            for event in change.events:
                self.event_records[run_id][event.id] = event
            if change.grant is not None:
                self.grants[change.grant.doc_id] = change.grant
            return change

    async def approval_grants(
        self, run_id: str, agent_id: str, tools: list[str]
    ) -> list[ApprovalGrant]:
        keys = grant_doc_ids(run_id, agent_id, tools)
        return [self.grants[k].model_copy(deep=True) for k in keys if k in self.grants]

    async def claim_wake(
        self, run_id: str, key: str, hold_seconds: float = WAKE_HOLD_SECONDS
    ) -> WakeClaim:
        claim = self.wakes.get((run_id, key))
        if claim is not None and claim[1]:
            return "done"
        if claim is not None and time.time() - claim[0] < hold_seconds:
            return "held"
        self.wakes[(run_id, key)] = (time.time(), False)
        return "claimed"

    async def finish_wake(self, run_id: str, key: str) -> None:
        at, _ = self.wakes[(run_id, key)]
        self.wakes[(run_id, key)] = (at, True)


class InMemoryAgentStore:
    """Agent definitions in a dict."""

    def __init__(self, definitions: list[AgentDefinition] | None = None) -> None:
        self.agents: dict[str, AgentDefinition] = {}
        self.history: dict[str, list[AgentVersion]] = {}
        for definition in definitions or []:
            self._append(definition.id, definition)

    def _append(self, agent_id: str, definition: AgentDefinition | None) -> bool:
        versions = self.history.setdefault(agent_id, [])
        version = AgentVersion.next_after(versions, agent_id, definition)
        if version is not None:
            versions.append(version)
        if definition is None:
            return self.agents.pop(agent_id, None) is not None
        self.agents[agent_id] = definition
        return True

    async def put_agent(self, definition: AgentDefinition) -> None:
        self._append(definition.id, definition)

    async def delete_agent(self, agent_id: str) -> bool:
        return self._append(agent_id, None)

    async def agent_history(self, agent_id: str) -> list[AgentVersion]:
        return list(self.history.get(agent_id, []))

    async def get_agent(self, agent_id: str) -> AgentDefinition | None:
        return self.agents.get(agent_id)

    async def latest_version(self, agent_id: str) -> AgentVersion | None:
        versions = self.history.get(agent_id)
        return versions[-1] if versions else None

    async def get_agent_version(self, agent_id: str, version: int) -> AgentDefinition | None:
        for found in self.history.get(agent_id, []):
            if found.version == version:
                return found.definition
        return None

    async def list_agents(self) -> list[AgentDefinition]:
        return sorted(self.agents.values(), key=lambda d: d.id)


class InMemoryDeadLetterStore:
    """Dead letters in a dict."""

    def __init__(self) -> None:
        self.letters: dict[str, DeadLetter] = {}

    async def record_dead_letter(self, letter: DeadLetter) -> None:
        self.letters.setdefault(letter.id, letter)

    async def list_dead_letters(
        self, limit: int = 100, *, run_id: str | None = None
    ) -> list[DeadLetter]:
        found = [d for d in self.letters.values() if run_id is None or d.run_id == run_id]
        return sorted(found, key=lambda d: d.created_at, reverse=True)[:limit]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        return self.letters.get(letter_id)

    async def mark_replayed(self, letter_id: str) -> None:
        if letter_id in self.letters:
            self.letters[letter_id] = self.letters[letter_id].model_copy(
                update={"replayed_at": utcnow()}
            )


class InMemoryHandoffStore:
    """Offers shared with an ``InMemoryRunStore`` (the executor writes them in step commits)."""

    def __init__(self, runs: InMemoryRunStore) -> None:
        self.runs = runs
        self._lock = asyncio.Lock()

    async def get_offer(self, offer_id: str) -> HandoffOffer | None:
        offer = self.runs.offers.get(offer_id)
        return offer.model_copy(deep=True) if offer else None

    async def list_open_offers(self, limit: int = 100) -> list[HandoffOffer]:
        found = [o for o in self.runs.offers.values() if o.status == "open"]
        return sorted(found, key=lambda o: o.created_at)[:limit]

    async def claim_offer(
        self, offer_id: str, *, agent_id: str, target_run_id: str, now: datetime
    ) -> Claim | None:
        async with self._lock:
            offer = self.runs.offers.get(offer_id)
            if offer is None:
                return None
            if offer.status != "open" or now >= offer.expires_at:
                return Claim(offer.model_copy(deep=True), claimed_now=False)
            claimed = offer.model_copy(
                update={
                    "status": "claimed",
                    "claimed_by_agent": agent_id,
                    "target_run_id": target_run_id,
                    "claimed_at": now,
                }
            )
            self.runs.offers[offer_id] = claimed
            return Claim(claimed.model_copy(deep=True), claimed_now=True)

    async def expire_offer(self, offer_id: str, *, now: datetime) -> HandoffOffer | None:
        async with self._lock:
            offer = self.runs.offers.get(offer_id)
            if offer is None:
                return None
            if offer.status == "open" and now >= offer.expires_at:
                offer = offer.model_copy(update={"status": "expired", "expired_at": now})
                self.runs.offers[offer_id] = offer
            return offer.model_copy(deep=True)

    async def mark_expiry_scheduled(self, offer_id: str, task_name: str) -> None:
        offer = self.runs.offers.get(offer_id)
        if offer is not None:
            self.runs.offers[offer_id] = offer.model_copy(update={"expiry_task": task_name})

    async def update_source(
        self, run_id: str, *, status: str, child_run_id: str | None = None
    ) -> None:
        async with self.runs._lock:
            run = self.runs.runs.get(run_id)
            if run is None:
                return
            children = list(run.child_run_ids)
            if child_run_id and child_run_id not in children:
                children.append(child_run_id)
            self.runs.runs[run_id] = run.model_copy(
                update={"child_run_ids": children, "handoff_status": status}
            )


class InMemoryAuditStore:
    """Audit records in a list."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def record_audit(self, record: AuditRecord) -> None:
        self.records.append(record)

    async def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        return list(reversed(self.records))[:limit]
