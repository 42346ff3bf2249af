"""``FirestoreRunStore``, ``FirestoreAgentStore``, ``FirestoreDeadLetterStore``.

Layout: ``agent_runs/{run_id}`` (small, bounded) with sub-collections ``steps/{seq:06d}`` (a
step's messages, committed events and interaction record in one document: ``steps.py``),
``tool_calls/{seq:06d}-{index:03d}``, ``model_calls/{id}``, ``events/{event_id}`` (live events);
top-level ``handoff_offers/{offer_id}``, ``agents/{id}``, ``dead_letters/{id}``. Runs written
before step documents keep ``messages/{i:06d}``, committed events in ``events`` and
``interactions/{run_id}-{seq:06d}``, which are still read. Queries that would need composite
indexes sort on the client instead.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import JsonValue

from cloudagents.adapters.firestore import steps as step_docs
from cloudagents.adapters.firestore.ops import (
    Guarded,
    claim_wake_document,
    contention_exhausted,
    counted_get,
    counted_stream,
    finish_wake_document,
    from_doc,
    guarded,
    to_doc,
    transact,
    written,
)
from cloudagents.domain.agents import AgentDefinition, AgentVersion
from cloudagents.domain.approvals import (
    ApprovalGrant,
    ApprovalRecord,
    ApprovalStatus,
    approval_doc_id,
    grant_doc_ids,
)
from cloudagents.domain.conversations import (
    ConversationRecord,
    claimed,
    holder_done,
    released,
)
from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.events import RUN_EVENT_ADAPTER, RunEvent, event_id, tool_result_event
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

_R = TypeVar("_R")

RUNS = "agent_runs"
INTERACTIONS = "interactions"
OFFERS = "handoff_offers"
AGENTS = "agents"
AGENT_VERSIONS = "agent_versions"
DEAD_LETTERS = "dead_letters"
AUDIT = "audit_log"
APPROVALS = "approvals"
GRANTS = "approval_grants"
CONVERSATIONS = "conversations"


def _message_doc(index: int, message: Message) -> dict[str, Any]:
    return {"i": index, **to_doc(message.model_dump(mode="json"))}


# A saved (``done``) tool-call document names its result event (``tool_result_event``): the
# events readers find the results past a cursor by a range on this one field, and no event
# document is written for them (run version 6).
RESULT_EVENT = "result_event"


def _call_doc(call: ToolCallRecord) -> dict[str, Any]:
    doc: dict[str, Any] = to_doc(call.model_dump(mode="json"))
    if call.status == "done":
        doc[RESULT_EVENT] = event_id(call.seq, "c", call.index)
    return doc


def _call(data: dict[str, Any] | None) -> ToolCallRecord:
    fields = {k: v for k, v in (data or {}).items() if k != RESULT_EVENT}
    return ToolCallRecord.model_validate(from_doc(fields))


def _offer_doc(offer: HandoffOffer) -> dict[str, Any]:
    # A native timestamp: Firestore's TTL policy on expires_at ignores strings.
    return {**to_doc(offer.model_dump(mode="json")), "expires_at": offer.expires_at}


def _message(data: dict[str, Any]) -> Message:
    data = dict(data)
    data.pop("i", None)
    return Message.model_validate(from_doc(data))


# The last snapshot of each run the current delivery read (``get_run``; a context variable, so
# one request's reads are not another's): a guarded write that follows in the same delivery (the
# step's commit, a tool's finish, a snapshot pointer) starts from it instead of reading the run
# again. Only ever a first attempt's input, and only where it leads to a write: that write is
# conditioned on the snapshot's update time, so if the run changed since, it fails and the next
# attempt reads the run afresh.
_SEEN_RUNS: ContextVar[dict[str, Any]] = ContextVar("firestore_seen_runs", default={})  # noqa: B039

# The same for tool-call documents, by ``(run_id, seq, index)``: the call as this delivery last
# read it (``get_tool_call``) or wrote it (a claim, a saved result: the written fields and the
# write's update time). A tool delivery reads the call once, then claims it, saves its result
# and finishes from what it knows, each write conditioned on that version, instead of reading
# the call again before each (three reads less per call). A condition that fails (another
# delivery changed the call) drops the batch, and the next attempt reads the call afresh.
_SEEN_CALLS: ContextVar[dict[tuple[str, int, int], Any]] = ContextVar(
    "firestore_seen_calls",
    default={},  # noqa: B039
)
_SEEN_CALLS_KEPT = 64


class _Known:
    """A document as this process last read or wrote it: what a guarded write conditions on."""

    exists = True

    def __init__(self, data: dict[str, Any], update_time: Any) -> None:
        self._data = data
        self.update_time = update_time

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


class _Unclaimed:
    """A call with no document yet, as this delivery found it listed by its step."""

    exists = False

    def __init__(self, record: ToolCallRecord) -> None:
        self.record = record


def _remember_call(key: tuple[str, int, int], snap: Any) -> None:
    seen = {k: v for k, v in _SEEN_CALLS.get().items() if k != key}
    seen[key] = snap
    while len(seen) > _SEEN_CALLS_KEPT:  # a long-lived context (in process) keeps the latest
        del seen[next(iter(seen))]
    _SEEN_CALLS.set(seen)


def _recall_call(key: tuple[str, int, int]) -> Any:
    """The call as this delivery last read or wrote it, once; ``None`` if it did not."""
    seen = _SEEN_CALLS.get()
    if key not in seen:
        return None
    _SEEN_CALLS.set({k: v for k, v in seen.items() if k != key})
    return seen[key]


def _remember_written(writes: Guarded, key: tuple[str, int, int], data: dict[str, Any]) -> None:
    """After the batch commits, the call as just written (``data``, all of its fields)."""
    writes.on_commit(lambda result: _remember_call(key, _Known(data, result.update_time)))


class FirestoreRunStore:
    """Runs on Firestore; every state change is one transaction on the run document."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.runs = client.collection(RUNS)

    def _run_ref(self, run_id: str) -> Any:
        return self.runs.document(run_id)

    @staticmethod
    def _remember(run_id: str, snap: Any) -> None:
        _SEEN_RUNS.set({**_SEEN_RUNS.get(), run_id: snap})

    @staticmethod
    def _recall(run_id: str) -> Any:
        """The run as this delivery last read it (``get_run``), once; ``None`` if it did not."""
        seen = _SEEN_RUNS.get()
        if run_id not in seen:
            return None
        _SEEN_RUNS.set({k: v for k, v in seen.items() if k != run_id})
        return seen[run_id]

    async def _run_snapshot(
        self, run_id: str, first: list[bool], usable: Callable[[RunRecord], bool]
    ) -> tuple[Any, RunRecord | None]:
        """The run's snapshot for a guarded attempt: on the first attempt (``first`` holds one
        flag, cleared here) the remembered one if ``usable`` says it leads to a write, else a
        fresh read."""
        if first and first.pop():
            remembered = self._recall(run_id)
            if remembered is not None:
                run = RunRecord.model_validate(from_doc(remembered.to_dict()))
                if usable(run):
                    return remembered, run
        snap = await counted_get(self._run_ref(run_id))
        if not snap.exists:
            return snap, None
        return snap, RunRecord.model_validate(from_doc(snap.to_dict()))

    async def create_run(self, run: RunRecord, messages: list[Message]) -> bool:
        ref = self._run_ref(run.run_id)
        batch = self.client.batch()
        written(batch).create(
            ref,
            to_doc(run.model_copy(update={"message_count": len(messages)}).model_dump(mode="json")),
        )
        opening, spilled = step_docs.step_doc(-1, 0, messages, [], None)
        written(batch).set(ref.collection(step_docs.STEPS).document(step_docs.OPENING), opening)
        if spilled:
            for i, message in enumerate(messages):
                written(batch).set(
                    ref.collection("messages").document(f"{i:06d}"), _message_doc(i, message)
                )
        try:
            await batch.commit()
        except gexc.AlreadyExists:
            return False
        return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        snap = await counted_get(self._run_ref(run_id))
        if not snap.exists:
            return None
        self._remember(run_id, snap)
        return RunRecord.model_validate(from_doc(snap.to_dict()))

    async def list_runs(
        self,
        *,
        agent_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        parent_run_id: str | None = None,
    ) -> list[RunRecord]:
        query: Any = self.runs
        if parent_run_id is not None:
            query = query.where(filter=firestore.FieldFilter("parent_run_id", "==", parent_run_id))
        if agent_id is not None:
            query = query.where(filter=firestore.FieldFilter("agent_id", "==", agent_id))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        if agent_id is None and status is None and parent_run_id is None:
            query = query.order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
            return [
                RunRecord.model_validate(from_doc(d.to_dict())) async for d in counted_stream(query)
            ]
        runs = [
            RunRecord.model_validate(from_doc(d.to_dict())) async for d in counted_stream(query)
        ]
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs[:limit]

    def _legacy_messages(self, run_id: str, start: int, end: int | None) -> Any:
        query = (
            self._run_ref(run_id)
            .collection("messages")
            .where(filter=firestore.FieldFilter("i", ">=", start))
        )
        if end is not None:
            query = query.where(filter=firestore.FieldFilter("i", "<", end))
        return query.order_by("i")

    async def messages(self, run_id: str, *, start: int = 0) -> list[Message]:
        # The step documents that end past ``start`` (one read each); before the first of them,
        # the previous layout's message documents (a run written before step documents).
        query = (
            self._run_ref(run_id)
            .collection(step_docs.STEPS)
            .where(filter=firestore.FieldFilter("end", ">", start))
            .order_by("end")
        )
        docs = [d.to_dict() async for d in counted_stream(query)]
        found: list[Message] = []
        first = min((int(d["first"]) for d in docs), default=None)
        if first is None or first > start:
            legacy = self._legacy_messages(run_id, start, first)
            found.extend([_message(d.to_dict()) async for d in counted_stream(legacy)])
        for doc in docs:
            if doc.get("spilled"):
                spilled = self._legacy_messages(run_id, max(start, doc["first"]), doc["end"])
                found.extend([_message(d.to_dict()) async for d in counted_stream(spilled)])
            else:
                found.extend(step_docs.step_messages(doc, start))
        return found

    async def recent_messages(self, run_id: str, limit: int) -> list[Message]:
        last_step = (
            self._run_ref(run_id)
            .collection(step_docs.STEPS)
            .order_by("end", direction=firestore.Query.DESCENDING)
            .limit(1)
        )
        ends = [int(d.to_dict()["end"]) async for d in counted_stream(last_step)]
        if ends:
            return (await self.messages(run_id, start=max(0, ends[0] - limit)))[-limit:]
        query = (
            self._run_ref(run_id)
            .collection("messages")
            .order_by("i", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        found = [_message(d.to_dict()) async for d in counted_stream(query)]
        return list(reversed(found))

    async def tool_calls(
        self, run_id: str, seq: int, *, unclaimed: bool = True
    ) -> list[ToolCallRecord]:
        query = (
            self._run_ref(run_id)
            .collection("tool_calls")
            .where(filter=firestore.FieldFilter("seq", "==", seq))
        )
        calls = {c.index: c for c in [_call(d.to_dict()) async for d in counted_stream(query)]}
        if unclaimed:  # and the step's calls no claim has created yet (one read more)
            for call in await self._step_calls(run_id, seq):
                calls.setdefault(call.index, call)
        return [calls[i] for i in sorted(calls)]

    async def _step_calls(self, run_id: str, seq: int) -> list[ToolCallRecord]:
        """The calls step ``seq`` listed for their first claim to create (their document may
        exist by now: the caller prefers it)."""
        ref = self._run_ref(run_id).collection(step_docs.STEPS).document(step_docs.step_doc_id(seq))
        snap = await counted_get(ref)
        return step_docs.step_calls(snap.to_dict()) if snap.exists else []

    async def _unclaimed(self, run_id: str, seq: int, index: int) -> ToolCallRecord | None:
        """A call with no document: as its step listed it, if it did."""
        found = [c for c in await self._step_calls(run_id, seq) if c.index == index]
        return found[0] if found else None

    def _call_ref(self, run_id: str, seq: int, index: int) -> Any:
        return self._run_ref(run_id).collection("tool_calls").document(tool_call_doc_id(seq, index))

    async def get_tool_call(self, run_id: str, seq: int, index: int) -> ToolCallRecord | None:
        snap = await counted_get(self._call_ref(run_id, seq, index))
        if not snap.exists:
            listed = await self._unclaimed(run_id, seq, index)
            if listed is not None:  # its claim creates it from this copy, without a read
                _remember_call((run_id, seq, index), _Unclaimed(listed))
            return listed
        _remember_call((run_id, seq, index), snap)
        return _call(snap.to_dict())

    async def commit_step(self, commit: StepCommit) -> RunRecord | None:
        ref = self._run_ref(commit.run_id)
        first = [True]

        def applies(run: RunRecord) -> bool:
            return run.seq == commit.expected_seq and not run.finished

        async def apply(writes: Guarded) -> RunRecord | None:
            snap, run = await self._run_snapshot(commit.run_id, first, applies)
            if run is None or not applies(run):
                return None
            updated = commit.applied_to(run)  # validated before anything is written
            if updated.finished and run.conversation_id is not None:
                await self._let_go(writes, run, commit.conversation_reply)
            interaction = None
            if commit.interaction is not None:
                # The applied model call is named on the step's interaction record, not marked
                # by a write of its own on the call's document (one write less per step).
                interaction = commit.interaction.model_copy(
                    update={"applied_model_call": commit.applied_model_call}
                )
            # The calls whose first claim creates their document: listed by the step document.
            listed = [c for c in commit.tool_calls if c.created_by_claim]
            if commit.new_messages or commit.events or interaction is not None:
                # One document for the step's messages, events, interaction record and calls.
                doc, spilled = step_docs.step_doc(
                    run.seq,
                    run.message_count,
                    commit.new_messages,
                    commit.events,
                    interaction,
                    listed,
                )
                step_ref = ref.collection(step_docs.STEPS).document(step_docs.step_doc_id(run.seq))
                writes.set(step_ref, doc)
                if spilled:
                    listed = []
                    for offset, message in enumerate(commit.new_messages):
                        index = run.message_count + offset
                        doc_ref = ref.collection("messages").document(f"{index:06d}")
                        writes.set(doc_ref, _message_doc(index, message))
                    for event in commit.events:
                        writes.set(
                            ref.collection("events").document(event.id),
                            to_doc(event.model_dump(mode="json")),
                        )
            else:
                listed = []
            for call in commit.tool_calls:
                if call not in listed:
                    writes.set(self._call_ref(run.run_id, call.seq, call.index), _call_doc(call))
            if commit.handoff_offer is not None:
                writes.set(
                    self.client.collection(OFFERS).document(commit.handoff_offer.offer_id),
                    _offer_doc(commit.handoff_offer),
                )
            for approval in commit.approvals:
                writes.set(
                    self.client.collection(APPROVALS).document(approval.doc_id),
                    to_doc(approval.model_dump(mode="json")),
                )
            if commit.applied_model_call and commit.interaction is None:
                call_doc = ref.collection("model_calls").document(commit.applied_model_call)
                writes.set(call_doc, {"applied": True}, merge=True)
            writes.update_if_unchanged(ref, to_doc(updated.model_dump(mode="json")), snap)
            return updated

        result: RunRecord | None = await guarded(self.client, apply)
        return result

    async def _let_go(self, writes: Guarded, run: RunRecord, reply: Message | None) -> None:
        """In a finishing commit: append the run's answer to its conversation and let go."""
        assert run.conversation_id is not None
        ref = self.client.collection(CONVERSATIONS).document(run.conversation_id)
        snap = await counted_get(ref)
        if not snap.exists:
            return
        conversation = ConversationRecord.model_validate(from_doc(snap.to_dict()))
        if conversation.active_run_id != run.run_id:
            return
        if reply is not None:
            index = conversation.message_count
            writes.set(
                ref.collection("messages").document(f"{index:06d}"), _message_doc(index, reply)
            )
        after = released(conversation, run.run_id, reply is not None, utcnow())
        writes.update_if_unchanged(ref, to_doc(after.model_dump(mode="json")), snap)

    async def conversation_messages(self, conversation_id: str, *, last: int) -> list[Message]:
        if last <= 0:
            return []
        query = (
            self.client.collection(CONVERSATIONS)
            .document(conversation_id)
            .collection("messages")
            .order_by("i", direction=firestore.Query.DESCENDING)
            .limit(last)
        )
        found = [_message(from_doc(d.to_dict())) async for d in counted_stream(query)]
        return list(reversed(found))

    async def list_conversations_for_agent(
        self, agent_id: str, *, limit: int = 100
    ) -> list[ConversationRecord]:
        # One equality filter (no composite index); ordered here.
        query = self.client.collection(CONVERSATIONS).where(
            filter=firestore.FieldFilter("agent_id", "==", agent_id)
        )
        found = [
            ConversationRecord.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query)
        ]
        found.sort(key=lambda c: (c.updated_at, c.conversation_id), reverse=True)
        return found[:limit]

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        snap = await counted_get(self.client.collection(CONVERSATIONS).document(conversation_id))
        if not snap.exists:
            return None
        return ConversationRecord.model_validate(from_doc(snap.to_dict()))

    async def claim_conversation(
        self, conversation_id: str, *, run_id: str, agent_id: str, message: Message
    ) -> ConversationRecord:
        ref = self.client.collection(CONVERSATIONS).document(conversation_id)

        async def apply(writes: Guarded) -> ConversationRecord:
            snap = await counted_get(ref)
            record = (
                ConversationRecord.model_validate(from_doc(snap.to_dict())) if snap.exists else None
            )
            holder_finished = False
            now = utcnow()
            if record is not None and record.active_run_id not in (None, run_id):
                holder = await self.get_run(record.active_run_id or "")
                holder_finished = holder_done(record, holder.finished if holder else None, now)
            after = claimed(
                record,
                conversation_id,
                run_id=run_id,
                agent_id=agent_id,
                holder_finished=holder_finished,
                now=now,
            )
            if after is None:
                assert record is not None
                return record
            index = after.message_count - 1
            writes.set(
                ref.collection("messages").document(f"{index:06d}"), _message_doc(index, message)
            )
            if snap.exists:
                writes.update_if_unchanged(ref, to_doc(after.model_dump(mode="json")), snap)
            else:
                writes.create(ref, to_doc(after.model_dump(mode="json")))
            return after

        result: ConversationRecord = await guarded(self.client, apply)
        return result

    async def _change_call(
        self,
        run_id: str,
        seq: int,
        index: int,
        change: Callable[[ToolCallRecord], tuple[ToolCallRecord | None, _R]],
        committed: ToolCallRecord | None = None,
    ) -> _R | None:
        """Read the call; ``change`` gives the record to write (``None``: write nothing) and
        what to return, and the write applies only if the call is unchanged since the read
        (``guarded``). A call with no document yet (its step listed it for its first claim to
        create) is written by creating it, which fails if another delivery created it first;
        ``committed``: that call as its step committed it, so the first attempt creates from
        it without reading. ``None`` if the call does not exist."""
        ref = self._call_ref(run_id, seq, index)
        key = (run_id, seq, index)
        remembered = [_recall_call(key)]
        absent = [committed] if committed is not None else []

        def create(writes: Guarded, record: ToolCallRecord) -> _R:
            updated, answer = change(record)
            if updated is not None:
                data = _call_doc(updated)
                writes.create(ref, data)
                _remember_written(writes, key, data)
            return answer

        async def apply(writes: Guarded) -> _R | None:
            # First attempt: the call as this delivery knows it, if that leads to a write
            # (conditioned on its version, or on its absence); otherwise, and on every retry,
            # a fresh read.
            known = remembered.pop() if remembered else None
            if isinstance(known, _Unclaimed):
                absent[:] = absent or [known.record]
                known = None
            if known is None and absent:
                record = absent.pop()
                if change(record)[0] is not None:
                    return create(writes, record)
            if known is not None:
                updated, answer = change(_call(known.to_dict()))
                snap = known
            if known is None or updated is None:
                snap = await counted_get(ref)
                if not snap.exists:
                    unclaimed = await self._unclaimed(run_id, seq, index)
                    return None if unclaimed is None else create(writes, unclaimed)
                updated, answer = change(_call(snap.to_dict()))
            if updated is not None:
                data = _call_doc(updated)
                writes.update_if_unchanged(ref, data, snap)
                _remember_written(writes, key, data)
            return answer

        result: _R | None = await guarded(self.client, apply)
        return result

    async def start_tool_call(
        self,
        run_id: str,
        seq: int,
        index: int,
        *,
        lease_seconds: float,
        committed: ToolCallRecord | None = None,
    ) -> ToolClaim | None:
        def claim(call: ToolCallRecord) -> tuple[ToolCallRecord | None, ToolClaim]:
            updated, outcome = ToolClaim.decide(call, utcnow(), lease_seconds)
            return updated, ToolClaim(updated or call, outcome)

        return await self._change_call(run_id, seq, index, claim, committed)

    async def defer_tool_call(
        self, run_id: str, seq: int, index: int, *, until: datetime, window: int
    ) -> ToolCallRecord | None:
        def defer(call: ToolCallRecord) -> tuple[ToolCallRecord | None, ToolCallRecord]:
            if call.status != "pending":
                return None, call
            deferred = call.model_copy(update={"deferred_until": until, "rate_window": window})
            return deferred, deferred

        return await self._change_call(run_id, seq, index, defer)

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
        def save(call: ToolCallRecord) -> tuple[ToolCallRecord | None, ToolCallRecord]:
            if call.status == "done":
                return None, call
            done = call.finished_with(result, is_error, result_uri)
            return done, done

        return await self._change_call(run_id, seq, index, save)

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
        run_ref = self._run_ref(run_id)
        call_ref = self._call_ref(run_id, seq, index)
        remembered = [_recall_call((run_id, seq, index))]
        first = [True]

        def pending(run: RunRecord) -> bool:
            return any(
                item.kind == kind and item.id == tool_call_doc_id(seq, index)
                for item in run.pending
            )

        async def apply(writes: Guarded) -> ToolFinish | None:
            # The call as this delivery saved it, on the first attempt: a result once done stays
            # (and a call not done is written conditioned on that version). The run as the
            # delivery read it, on the first attempt, if the call is still on its list there:
            # nothing else writes a waiting run's document but its calls' finishes (its snapshot
            # has no pointer there since version 6), so for a step's only call it is current,
            # and if another call's finish wrote it since, the write fails and the next attempt
            # reads it afresh. "Already resolved" is always decided on a fresh read.
            call_snap = (remembered.pop() if remembered else None) or await counted_get(call_ref)
            run_snap, run = await self._run_snapshot(run_id, first, pending)
            # A call no claim created (its step lists it): finished by creating its document.
            listed = (
                call_snap.record
                if isinstance(call_snap, _Unclaimed)
                else None
                if call_snap.exists
                else await self._unclaimed(run_id, seq, index)
            )
            if (not call_snap.exists and listed is None) or run is None:
                return None
            call = listed or _call(call_snap.to_dict())
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
                    record=call,
                    run=run,
                    newly_finished=False,
                    wake=barrier.wake,
                    outbox=barrier.publish,
                )
            if call.status == "done":  # save_tool_result recorded it: that result stands
                done = call
            else:
                done = call.finished_with(result, is_error, result_uri)
                if listed is not None:
                    writes.create(call_ref, _call_doc(done))
                else:
                    writes.update_if_unchanged(call_ref, _call_doc(done), call_snap)
            updated = run.model_copy(
                update={
                    "pending": barrier.pending,
                    "outbox": barrier.outbox,
                    "updated_at": utcnow(),
                }
            )
            # The run's version too: a version 5 run whose result event is now on its call
            # document is not one a release that knows only version 5 reads right.
            changed = updated.model_dump(
                mode="json", include={"pending", "outbox", "updated_at", "schema_version"}
            )
            writes.update_if_unchanged(run_ref, to_doc(changed), run_snap)
            return ToolFinish(
                record=done,
                run=updated,
                newly_finished=True,
                wake=barrier.wake,
                outbox=barrier.publish,
            )

        finish: ToolFinish | None = await guarded(self.client, apply)
        return finish

    async def record_model_call(self, record: ModelCallRecord) -> None:
        doc = self._run_ref(record.run_id).collection("model_calls").document(record.attempt_id)
        await written(doc).set(to_doc(record.model_dump(mode="json")))

    async def model_calls(self, run_id: str) -> list[ModelCallRecord]:
        stream = counted_stream(self._run_ref(run_id).collection("model_calls"))
        # A commit marks its applied call with a merge write; only recorded calls count.
        docs = [from_doc(d.to_dict()) async for d in stream]
        calls = [ModelCallRecord.model_validate(d) for d in docs if "attempt_id" in d]
        # Applied: named by the step's interaction record (version 2), or, for steps written
        # before it, marked on the call's document (the merge write above).
        named = {i.applied_model_call for i in await self.interactions(run_id)}
        calls = [
            c.model_copy(update={"applied": True}) if c.attempt_id in named else c for c in calls
        ]
        return sorted(calls, key=lambda c: (c.seq, c.created_at))

    async def cancel_run(self, run_id: str, reason: str) -> RunRecord | None:
        ref = self._run_ref(run_id)

        async def apply(writes: Guarded) -> RunRecord | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            run = RunRecord.model_validate(from_doc(snap.to_dict()))
            if run.finished:
                return run
            result = run.progress.stopped(LoopExit.CANCELLED, reason)
            cancelled = run.model_copy(
                update={
                    "seq": run.seq + 1,
                    "status": RunStatus.FINISHED,
                    "result": result,
                    "pending": [],
                    "outbox": [],
                    "updated_at": utcnow(),
                }
            )
            writes.update_if_unchanged(ref, to_doc(cancelled.model_dump(mode="json")), snap)
            return cancelled

        run: RunRecord | None = await guarded(self.client, apply)
        return run

    async def events(self, run_id: str, *, after: str | None = None) -> list[RunEvent]:
        # Live events (and, for runs written before step documents, every event) in ``events``;
        # a step's committed events in its step document (those holding events past ``after``).
        query: Any = self._run_ref(run_id).collection("events")
        if after:
            query = query.where(filter=firestore.FieldFilter("id", ">", after))
        query = query.order_by("id")
        found: dict[str, RunEvent] = {}
        async for d in counted_stream(query):
            event = RUN_EVENT_ADAPTER.validate_python(from_doc(d.to_dict()))
            found[event.id] = event
        steps: Any = self._run_ref(run_id).collection(step_docs.STEPS)
        if after:
            steps = steps.where(filter=firestore.FieldFilter("last_event", ">", after))
        async for doc in counted_stream(steps):
            for event in step_docs.step_events(doc.to_dict()):
                if after is None or event.id > after:
                    found[event.id] = event
        # Tool results: the saved tool-call documents (an event written for one, by a run
        # before version 6 or by an approval's decision, stands).
        calls = self._run_ref(run_id).collection("tool_calls")
        calls = calls.where(filter=firestore.FieldFilter(RESULT_EVENT, ">", after or ""))
        async for doc in counted_stream(calls):
            event = tool_result_event(_call(doc.to_dict()))
            found.setdefault(event.id, event)
        return [found[i] for i in sorted(found)]

    async def add_events(self, run_id: str, events: list[RunEvent]) -> None:
        # Live events only (the streamed chunks, the "calling model" status, a handoff's
        # status): counted apart from the writes of the state machine.
        batch = self.client.batch()
        for event in events:
            doc = self._run_ref(run_id).collection("events").document(event.id)
            written(batch, live=True).set(doc, to_doc(event.model_dump(mode="json")))
        await batch.commit()

    async def interactions(self, run_id: str) -> list[Interaction]:
        # Step documents, and ``interactions`` for the steps of runs written before them.
        query = self.client.collection(INTERACTIONS).where(
            filter=firestore.FieldFilter("run_id", "==", run_id)
        )
        legacy = [d.to_dict() async for d in counted_stream(query)]
        steps = self._run_ref(run_id).collection(step_docs.STEPS).select(["seq", "interaction"])
        docs = [d.to_dict() async for d in counted_stream(steps)]
        return step_docs.interactions(docs, legacy)

    def _approval_ref(self, run_id: str, approval_id: str) -> Any:
        return self.client.collection(APPROVALS).document(approval_doc_id(run_id, approval_id))

    async def get_approval(self, run_id: str, approval_id: str) -> ApprovalRecord | None:
        snap = await counted_get(self._approval_ref(run_id, approval_id))
        return ApprovalRecord.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def list_approvals(
        self, *, run_id: str | None = None, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        # One equality filter at most, so no composite index: sorted here.
        query: Any = self.client.collection(APPROVALS)
        if run_id is not None:
            query = query.where(filter=firestore.FieldFilter("run_id", "==", run_id))
        elif status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status))
        found = [
            ApprovalRecord.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query)
        ]
        found = [a for a in found if status is None or a.status == status]
        found.sort(key=lambda a: (a.requested_at, a.doc_id))
        return found[:limit]

    async def change_approval(
        self, run_id: str, approval_id: str, rule: ApprovalRule
    ) -> ApprovalChange | None:
        approval_ref = self._approval_ref(run_id, approval_id)
        run_ref = self._run_ref(run_id)
        seq_text, _, index_text = approval_id.partition("-")
        if not (seq_text.isdigit() and index_text.isdigit()):
            return None
        call_ref = self._call_ref(run_id, int(seq_text), int(index_text))

        async def apply(writes: Guarded) -> ApprovalChange | None:
            approval_snap = await counted_get(approval_ref)
            run_snap = await counted_get(run_ref)
            call_snap = await counted_get(call_ref)
            if not (approval_snap.exists and run_snap.exists and call_snap.exists):
                return None
            change = rule(
                ApprovalRecord.model_validate(from_doc(approval_snap.to_dict())),
                RunRecord.model_validate(from_doc(run_snap.to_dict())),
                _call(call_snap.to_dict()),
            )
            if change.written:
                writes.update_if_unchanged(
                    approval_ref, to_doc(change.approval.model_dump(mode="json")), approval_snap
                )
            if change.call is not None:
                writes.update_if_unchanged(call_ref, _call_doc(change.call), call_snap)
            if change.run is not None:
                writes.update_if_unchanged(
                    run_ref, to_doc(change.run.model_dump(mode="json")), run_snap
                )
            for event in change.events:
                writes.set(
                    run_ref.collection("events").document(event.id),
                    to_doc(event.model_dump(mode="json")),
                )
            if change.grant is not None:
                writes.set(
                    self.client.collection(GRANTS).document(change.grant.doc_id),
                    to_doc(change.grant.model_dump(mode="json")),
                )
            return change

        result: ApprovalChange | None = await guarded(self.client, apply)
        return result

    async def approval_grants(
        self, run_id: str, agent_id: str, tools: list[str]
    ) -> list[ApprovalGrant]:
        found = []
        for doc_id in grant_doc_ids(run_id, agent_id, tools):
            snap = await counted_get(self.client.collection(GRANTS).document(doc_id))
            if snap.exists:
                found.append(ApprovalGrant.model_validate(from_doc(snap.to_dict())))
        return found

    async def claim_wake(
        self, run_id: str, key: str, hold_seconds: float = WAKE_HOLD_SECONDS
    ) -> WakeClaim:
        doc = self._run_ref(run_id).collection("wakeups").document(key)
        return await claim_wake_document(self.client, doc, hold_seconds)

    async def finish_wake(self, run_id: str, key: str) -> None:
        await finish_wake_document(self._run_ref(run_id).collection("wakeups").document(key))


class FirestoreAgentStore:
    """Agent definitions in ``agents/{id}``; their history in ``agent_versions/{id}``
    (``{latest, updated_at}``) and ``agent_versions/{id}/versions/{version:06d}``.

    ``agents/{id}`` holds the definition alone, exactly as before versions existed. A put or a
    delete is one transaction over the three documents: it reads the latest version, appends
    one only if the definition changed, and writes (or deletes) ``agents/{id}``."""

    def __init__(self, client: firestore.AsyncClient, *, cached_versions: int = 256) -> None:
        self.client = client
        self.collection = client.collection(AGENTS)
        self.versions = client.collection(AGENT_VERSIONS)
        # (agent_id, version) -> definition: a version never changes once written, so this
        # per-process cache needs no invalidation (a step of a pinned run reads nothing).
        self.cached_versions = cached_versions
        self._versions: OrderedDict[tuple[str, int], AgentDefinition | None] = OrderedDict()

    async def put_agent(self, definition: AgentDefinition) -> None:
        try:
            await self._append(definition.id, definition)
        except ValueError as exc:  # e.g. an integer beyond Firestore's 64 bits, found encoding
            if contention_exhausted(exc):
                raise
            raise PermanentMessageError(f"the definition cannot be stored: {exc}") from exc

    async def delete_agent(self, agent_id: str) -> bool:
        return await self._append(agent_id, None)

    async def agent_history(self, agent_id: str) -> list[AgentVersion]:
        query = self.versions.document(agent_id).collection("versions")
        return [
            AgentVersion.model_validate(from_doc(d.to_dict())) async for d in counted_stream(query)
        ]

    async def _append(self, agent_id: str, definition: AgentDefinition | None) -> bool:
        """Write ``definition`` (None: delete) and its version; whether there was one to write
        or delete."""
        meta_ref = self.versions.document(agent_id)
        agent_ref = self.collection.document(agent_id)

        @firestore.async_transactional
        async def apply(transaction: Any) -> bool:
            meta = await counted_get(meta_ref, transaction)
            current = await counted_get(agent_ref, transaction)
            latest = int((meta.to_dict() or {}).get("latest", 0)) if meta.exists else 0
            history: list[AgentVersion] = []
            if latest:
                last = await counted_get(
                    meta_ref.collection("versions").document(f"{latest:06d}"), transaction
                )
                if last.exists:
                    history.append(AgentVersion.model_validate(from_doc(last.to_dict())))
            version = AgentVersion.next_after(history, agent_id, definition)
            if version is not None:
                version_ref = meta_ref.collection("versions").document(f"{version.version:06d}")
                written(transaction).create(version_ref, to_doc(version.model_dump(mode="json")))
                written(transaction).set(
                    meta_ref, {"latest": version.version, "updated_at": version.created_at}
                )
            if definition is None:
                if current.exists:
                    written(transaction).delete(agent_ref)
                return bool(current.exists)
            written(transaction).set(agent_ref, to_doc(definition.model_dump(mode="json")))
            return True

        return await transact(self.client, apply)

    async def get_agent(self, agent_id: str) -> AgentDefinition | None:
        snap = await counted_get(self.collection.document(agent_id))
        return AgentDefinition.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def latest_version(self, agent_id: str) -> AgentVersion | None:
        meta = await counted_get(self.versions.document(agent_id))
        latest = int((meta.to_dict() or {}).get("latest", 0)) if meta.exists else 0
        if not latest:
            return None
        definition = await self.get_agent_version(agent_id, latest)
        return AgentVersion(agent_id=agent_id, version=latest, definition=definition)

    async def get_agent_version(self, agent_id: str, version: int) -> AgentDefinition | None:
        key = (agent_id, version)
        if key in self._versions:
            self._versions.move_to_end(key)
            return self._versions[key]
        ref = self.versions.document(agent_id).collection("versions").document(f"{version:06d}")
        snap = await counted_get(ref)
        if not snap.exists:
            return None  # not cached: a version not there yet may be written later
        definition = AgentVersion.model_validate(from_doc(snap.to_dict())).definition
        self._versions[key] = definition
        while len(self._versions) > self.cached_versions:
            self._versions.popitem(last=False)
        return definition

    async def list_agents(self) -> list[AgentDefinition]:
        found = [
            AgentDefinition.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(self.collection)
        ]
        return sorted(found, key=lambda d: d.id)


class FirestoreDeadLetterStore:
    """Dead letters in ``dead_letters/{id}``; the first record of a message wins."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.collection = client.collection(DEAD_LETTERS)

    async def record_dead_letter(self, letter: DeadLetter) -> None:
        with contextlib.suppress(gexc.AlreadyExists):
            data = {**to_doc(letter.model_dump(mode="json")), "expire_at": letter.expire_at}
            await written(self.collection.document(letter.id)).create(data)

    async def list_dead_letters(
        self, limit: int = 100, *, run_id: str | None = None
    ) -> list[DeadLetter]:
        if run_id is not None:
            # One equality filter (no composite index); a run has few dead letters.
            query = self.collection.where(filter=firestore.FieldFilter("run_id", "==", run_id))
            found = [
                DeadLetter.model_validate(from_doc(d.to_dict()))
                async for d in counted_stream(query)
            ]
            return sorted(found, key=lambda d: d.created_at, reverse=True)[:limit]
        query = self.collection.order_by("created_at", direction=firestore.Query.DESCENDING)
        return [
            DeadLetter.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query.limit(limit))
        ]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        snap = await counted_get(self.collection.document(letter_id))
        return DeadLetter.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def mark_replayed(self, letter_id: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            await written(self.collection.document(letter_id)).update(
                {"replayed_at": utcnow().isoformat()}
            )


class FirestoreHandoffStore:
    """Offers in ``handoff_offers/{offer_id}``; claim and expiry are transactions."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.collection = client.collection(OFFERS)

    async def get_offer(self, offer_id: str) -> HandoffOffer | None:
        snap = await counted_get(self.collection.document(offer_id))
        return HandoffOffer.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def list_open_offers(self, limit: int = 100) -> list[HandoffOffer]:
        query = self.collection.where(filter=firestore.FieldFilter("status", "==", "open"))
        offers = [
            HandoffOffer.model_validate(from_doc(d.to_dict())) async for d in counted_stream(query)
        ]
        return sorted(offers, key=lambda o: o.created_at)[:limit]

    async def claim_offer(
        self, offer_id: str, *, agent_id: str, target_run_id: str, now: datetime
    ) -> Claim | None:
        ref = self.collection.document(offer_id)

        async def apply(writes: Guarded) -> Claim | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            offer = HandoffOffer.model_validate(from_doc(snap.to_dict()))
            if offer.status != "open" or now >= offer.expires_at:
                return Claim(offer, claimed_now=False)
            claimed = offer.model_copy(
                update={
                    "status": "claimed",
                    "claimed_by_agent": agent_id,
                    "target_run_id": target_run_id,
                    "claimed_at": now,
                }
            )
            writes.update_if_unchanged(ref, _offer_doc(claimed), snap)
            return Claim(claimed, claimed_now=True)

        claim: Claim | None = await guarded(self.client, apply)
        return claim

    async def expire_offer(self, offer_id: str, *, now: datetime) -> HandoffOffer | None:
        ref = self.collection.document(offer_id)

        async def apply(writes: Guarded) -> HandoffOffer | None:
            snap = await counted_get(ref)
            if not snap.exists:
                return None
            offer = HandoffOffer.model_validate(from_doc(snap.to_dict()))
            if offer.status == "open" and now >= offer.expires_at:
                offer = offer.model_copy(update={"status": "expired", "expired_at": now})
                writes.update_if_unchanged(ref, _offer_doc(offer), snap)
            return offer

        offer: HandoffOffer | None = await guarded(self.client, apply)
        return offer

    async def mark_expiry_scheduled(self, offer_id: str, task_name: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            await written(self.collection.document(offer_id)).update({"expiry_task": task_name})

    async def update_source(
        self, run_id: str, *, status: str, child_run_id: str | None = None
    ) -> None:
        update: dict[str, Any] = {"handoff_status": status}
        if child_run_id:
            update["child_run_ids"] = firestore.ArrayUnion([child_run_id])
        with contextlib.suppress(gexc.NotFound):
            await written(self.client.collection(RUNS).document(run_id)).update(update)


class FirestoreAuditStore:
    """Audit records in ``audit_log/{id}`` (Firestore TTL deletes them at ``expire_at``)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.collection = client.collection(AUDIT)

    async def record_audit(self, record: AuditRecord) -> None:
        data = {**to_doc(record.model_dump(mode="json")), "expire_at": record.expire_at}
        await written(self.collection.document(record.id)).set(data)

    async def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        query = self.collection.order_by("created_at", direction=firestore.Query.DESCENDING)
        return [
            AuditRecord.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query.limit(limit))
        ]
