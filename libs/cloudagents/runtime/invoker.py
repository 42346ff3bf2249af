"""The tool invoker: runs one tool call per message, at most once per call where it matters.

A delivery first claims the call with a lease (the tool's timeout plus
``CLOUDAGENTS_TOOL_LEASE_GRACE_SECONDS``). While another delivery holds a live lease, a
non-idempotent tool is not run: the message is refused (503) and Pub/Sub redelivers it later,
when the holder has recorded the result or its lease has passed. A call whose lease passed
without a result was interrupted (its process died mid-call): an idempotent tool runs again, a
non-idempotent one is answered with an "interrupted" error result rather than risking its effect
twice. A call refused by the agent's tools-per-minute limit is not retried by redelivery (which
would climb toward the subscription's ``max_delivery_attempts`` and the dead-letter topic): it
books a slot in the first window that has one, records that on its document, schedules a wake-up
task for that window's start, and is acknowledged (``deferred``); the wake-up dispatches it again.
A result is saved on the tool-call document alone first (first result wins; retried in
process), then a transaction on the run takes the call off its pending list; the call that empties
the list stores and publishes the run's next step message. A redelivered message for a saved call
finishes that second part if it had not happened, or re-publishes the wake-up (and the audit
record), and does not run the tool again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import timedelta
from typing import Any

from cloudagents.domain.errors import PermanentMessageError, TransientError
from cloudagents.domain.runs import (
    OutboxMessage,
    PendingKind,
    RunRecord,
    StepMessage,
    ToolAuditMessage,
    ToolCallRecord,
    ToolMessage,
    WakeUp,
    utcnow,
)
from cloudagents.engine import calls as agent_calls
from cloudagents.engine import waits
from cloudagents.faults import crash_point
from cloudagents.ports.stores import ToolClaim
from cloudagents.runtime.definitions import definition
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.toolbox import run_tool, tool_names
from cloudagents.telemetry import tracer
from cloudagents.tools import ToolResult, idempotency_scope

log = logging.getLogger(__name__)
SAVE_ATTEMPTS = 5
# Deferred calls start spread over the first part of their window, not all at its first instant.
DEFER_SPREAD = 0.1


class _Deferred(Exception):
    """The call waits for its rate-limit window; the message is acknowledged."""


class _Done(Exception):
    """The claim found the call done (a delivery before this one saved its result)."""

    def __init__(self, record: ToolCallRecord) -> None:
        self.record = record


class ToolInvoker:
    """Applies ``{ws}-tools`` messages."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def handle(self, message: ToolMessage) -> str:
        # A message that carries its call (one its first claim creates) reads none: the claim
        # creates it, or finds it and decides from what another delivery wrote.
        committed = message.call
        record = committed or await self.deps.runs.get_tool_call(
            message.run_id, message.seq, message.index
        )
        run = await self.deps.runs.get_run(message.run_id)
        if run is None:
            raise PermanentMessageError(f"unknown run {message.run_id!r}")
        if record is None:
            raise PermanentMessageError(
                f"run {message.run_id!r} has no tool call {message.index} at step {message.seq}"
            )
        if record.status == "done":
            return await self._finish(record, run, peeked=True)
        if run.finished:
            if committed is not None:
                # The call as stored: a delivery that sees it done publishes its audit record
                # again (at least once), as one that read it would have.
                stored = await self.deps.runs.get_tool_call(run.run_id, record.seq, record.index)
                if stored is not None and stored.status == "done":
                    return await self._finish(stored, run, peeked=True)
            return "run-finished"
        if record.child_run_id is not None:
            return await self._child(record, run)
        if record.approval not in (None, "approved"):
            # Gated and not approved (a stray dispatch): a decision dispatches it, or settles it.
            return "awaiting-approval"
        with tracer.start_as_current_span(
            f"execute_tool {record.call.name}",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": record.call.name,
                "gen_ai.tool.call.id": record.call.id,
                "cloudagents.run_id": run.run_id,
            },
        ):
            try:
                result = await self._execute(run, record, committed)
            except _Deferred:
                return "deferred"
            except _Done as done:
                return await self._finish(done.record, run, peeked=True)
        crash_point("invoker.after_tool")
        saved = await self._save(record, result)
        return await self._finish(saved, run)

    async def _execute(
        self, run: RunRecord, record: ToolCallRecord, committed: ToolCallRecord | None
    ) -> ToolResult:
        """Run the call. ``committed``: ``record`` is the call as its step committed it (from
        the message), not as read: the claim may create the call's document from it."""
        agent = await definition(self.deps, run, run.agent_id)
        tool = await run_tool(self.deps, run, record)
        if agent is None or tool is None or record.call.name not in tool_names(agent):
            return ToolResult(f"tool {record.call.name!r} is not available to this agent", True)
        lease = tool.timeout_seconds + self.deps.settings.tool_lease_grace_seconds
        if not tool.idempotent and ToolClaim.decide(record, utcnow(), lease)[1] == "held":
            raise self._held(record)  # before taking a tools-per-minute slot for nothing
        limit = agent.budget.max_tools_per_minute
        if limit is not None and committed is not None:
            # The window it booked, if a delivery before deferred it, is on its document.
            fresh = await self.deps.runs.get_tool_call(run.run_id, record.seq, record.index)
            if fresh is None:
                raise PermanentMessageError(f"tool call {record.doc_id} of {run.run_id} vanished")
            if fresh.status == "done":
                raise _Done(fresh)
            record, committed = fresh, None
        booked = limit is not None and await self._admit(record, agent.id, limit)
        claim = await self.deps.runs.start_tool_call(
            run.run_id, record.seq, record.index, lease_seconds=lease, committed=committed
        )
        if claim is None:
            raise PermanentMessageError(f"tool call {record.doc_id} of {run.run_id} vanished")
        stored = claim.record
        if claim.outcome == "done":
            if committed is not None:
                raise _Done(stored)  # a duplicate of a saved call: finish it, as if read
            return ToolResult(stored.result, stored.is_error)
        if booked and claim.outcome == "held":
            # The window's booked slot is the first claimer's: a duplicate delivery in that
            # window has no slot of its own, so it waits for the result instead of running.
            raise self._held(stored)
        if not tool.idempotent:
            if claim.outcome == "held":
                # Another delivery is running it now: come back when it has recorded the result
                # (or its lease has passed) rather than guess.
                raise self._held(stored)
            if claim.outcome == "taken_over":
                # Started before and never recorded: running it again could do its effect twice.
                return ToolResult(
                    f"{tool.name} was interrupted and is not retried because it is not "
                    f"idempotent (idempotency key {record.idempotency_key})",
                    True,
                )
        with idempotency_scope(record.idempotency_key):
            return await tool.invoke(record.call.arguments)

    async def _child(self, record: ToolCallRecord, run: RunRecord) -> str:
        """A call to another agent: start its child run if it does not exist (its intent was
        lost), wait while it runs, and once it is finished put its result on the call."""
        assert record.child_run_id is not None and record.child_agent_id is not None
        child = await self.deps.runs.get_run(record.child_run_id)
        peer = await definition(self.deps, run, record.child_agent_id)
        if child is None:
            message = agent_calls.child_message(peer, record.call.arguments)
            intent = agent_calls.child_intent(
                run, record.seq, record.index, record.child_run_id, record.child_agent_id, message
            )
            await self.deps.publish([intent])
            return "child-started"
        if not child.finished:
            return "child-running"
        content, is_error = agent_calls.child_result(
            child, peer.output_schema if peer is not None else None
        )
        saved = await self._save(record, ToolResult(content, is_error))
        return await self._finish(saved, run)

    @staticmethod
    def _audit(record: ToolCallRecord, run: RunRecord) -> OutboxMessage:
        """The ``{ws}-tools-audit`` record of a call and how it ended (published by every
        delivery that sees it done: at least once)."""
        return OutboxMessage.of(
            "tools_audit",
            ToolAuditMessage(
                run_id=record.run_id,
                agent_id=run.agent_id,
                seq=record.seq,
                index=record.index,
                tool=record.call.name,
                idempotency_key=record.idempotency_key,
                is_error=record.is_error,
                attempts=record.attempts,
            ),
        )

    @staticmethod
    def _held(record: ToolCallRecord) -> TransientError:
        until = f"{record.lease_until:%H:%M:%S}" if record.lease_until else "?"
        return TransientError(
            f"tool call {record.doc_id} of {record.run_id} is running in another delivery "
            f"(lease until {until})"
        )

    async def _admit(self, record: ToolCallRecord, key: str, limit: int) -> bool:
        """Return when the call may run in this window (``True``: on the slot it booked for
        this window earlier); raise ``_Deferred`` after booking it a slot in a later window and
        scheduling its wake-up there."""
        now = self.deps.clock()
        seconds = self.deps.settings.rate_window_seconds
        current = int(now.timestamp() // seconds)
        if record.rate_window == current:
            return True  # its booked window has come
        if record.rate_window is not None and record.rate_window > current:
            until = record.deferred_until or now
        else:
            window, until = await self.deps.rate_limiter.reserve(
                key, limit, now, window_seconds=seconds
            )
            if window == current:
                return False
            until += timedelta(seconds=random.uniform(0, seconds * DEFER_SPREAD))
            stored = await self.deps.runs.defer_tool_call(
                record.run_id, record.seq, record.index, until=until, window=window
            )
            if stored is None:
                raise PermanentMessageError(
                    f"tool call {record.doc_id} of {record.run_id} vanished"
                )
            if stored.status != "pending":
                return False  # another delivery got further; the claim below sorts it out
        log.info(
            "tool call deferred by the tools-per-minute limit",
            extra={"fields": {"run_id": record.run_id, "call": record.doc_id, "until": str(until)}},
        )
        await self.deps.schedule_wake(
            WakeUp(run_id=record.run_id, seq=record.seq + 1, item=record.doc_id, at=until)
        )
        raise _Deferred

    async def _save(self, record: ToolCallRecord, result: ToolResult) -> ToolCallRecord:
        """Make the result durable on the tool-call document (a cold document, unlike the run's)
        before anything else can fail: a result that was produced is never lost and answered
        "interrupted" later. Retried here, since until it is saved it exists only in memory."""
        for attempt in range(SAVE_ATTEMPTS - 1):
            try:
                return await self._save_once(record, result)
            except PermanentMessageError:
                raise
            except Exception:
                log.warning("saving tool call %s of %s: retrying", record.doc_id, record.run_id)
                await asyncio.sleep(0.2 * 2**attempt)
        return await self._save_once(record, result)

    async def _save_once(self, record: ToolCallRecord, result: ToolResult) -> ToolCallRecord:
        value: Any = result.content
        result_uri: str | None = None
        if len(json.dumps(value, default=str)) > self.deps.settings.tool_result_inline_bytes:
            # Large outputs go to the bucket so no Firestore document nears 1 MiB.
            result_uri = await self.deps.blobs.put(
                self.deps.topology.context_bucket,
                f"runs/{record.run_id}/tool_results/{record.doc_id}.txt",
                result.as_text().encode(),
                "text/plain",
            )
            value = None
        saved = await self.deps.runs.save_tool_result(
            record.run_id,
            record.seq,
            record.index,
            result=value,
            is_error=result.is_error,
            result_uri=result_uri,
        )
        if saved is None:
            raise PermanentMessageError(f"tool call {record.doc_id} of {record.run_id} vanished")
        return saved

    async def _finish(self, record: ToolCallRecord, run: RunRecord, *, peeked: bool = False) -> str:
        """Take the (saved) call off the run's pending list; the last one wakes the run.

        ``peeked``: ``record`` and ``run`` were just read outside a transaction. A delivery
        that finds the call resolved and off the run's list is a duplicate, decided by the same
        barrier rule without a transaction: under redelivery most tool deliveries are such
        duplicates, and each transaction would lock the run and the call documents."""
        wake = OutboxMessage.of("steps", StepMessage(run_id=record.run_id, seq=record.seq + 1))
        kind: PendingKind = "child_run" if record.child_run_id is not None else "tool_call"
        if peeked:
            seen = waits.resolve(
                run, kind, record.doc_id, seq=record.seq, already_resolved=True, wake=wake
            )
            if not seen.newly_resolved:
                await self.deps.publish([self._audit(record, run), *seen.publish])
                return "duplicate" + ("-rewoke" if seen.wake else "")
        finish = await self.deps.runs.finish_tool_call(
            record.run_id,
            record.seq,
            record.index,
            result=record.result,
            is_error=record.is_error,
            result_uri=record.result_uri,
            wake=wake,
            kind=kind,
        )
        if finish is None:
            raise PermanentMessageError(f"tool call {record.doc_id} of {record.run_id} vanished")
        crash_point("invoker.after_finish")
        await self.deps.publish([self._audit(finish.record, run), *finish.outbox])
        if not finish.newly_finished:
            return "duplicate" + ("-rewoke" if finish.wake else "")
        return "done-woke-run" if finish.wake else "done"
