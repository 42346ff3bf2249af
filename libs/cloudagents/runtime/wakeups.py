"""Wake-ups: every waiting run is moved on by a task, never only by a message arriving.

A run can wait for messages that never come: a tool message lost or dead-lettered, a tool
invoker killed while it held a call, a wake-up step message dropped after the barrier, a step
message whose retries ran out. So a run's waits carry Cloud Tasks wake-ups (``{ws}-wakeups``,
handled by the run executor at ``/tasks/wake``):

* the **deadline** wake-up (``seq=None``), scheduled when the run starts, at
  ``created_at + timeout_seconds``: past it the run ends ``ERROR`` with what it was waiting for;
* the **wait** wake-ups (``seq`` = the step the run waits at), the first committed in the outbox
  of the step that starts the wait, ``CLOUDAGENTS_WAKE_SECONDS`` later (or at the deadline): each
  dispatches again every item that shows no progress — a call still ``pending`` and not
  deferred, a ``running`` call whose lease has passed, a ``done`` call still on the pending list
  — or, when nothing is pending any more, the step message that should have woken the run; then
  it schedules the next one, backing off (2x, 4x … 16x ``WAKE_SECONDS``), while the run still
  waits at that step. Each wake-up of a wait (``gen``) is handled once: a duplicate task finds
  it claimed (``RunStore.claim_wake``) and does nothing, so duplicates never multiply into
  parallel chains; a claim is finished once the next wake-up is scheduled, and one whose handler
  died in between is taken over by a later delivery after ``WAKE_HOLD_SECONDS``;
* the **deferred-call** wake-up (``item``), scheduled by the tool invoker at the start of the
  rate-limit window a refused call booked: it dispatches that call.

Every wake-up is harmless when it is stale or duplicated (the Cloud Tasks emulator neither
de-duplicates nor deletes tasks): it reads the run, does nothing for a run that has moved on or
finished, and what it dispatches goes through the handlers' own idempotence (a tool call is
claimed with a lease; a step is applied at most once per ``seq``). The truth is in Firestore; a
task is only a wake-up call.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cloudagents.domain.errors import TransientError
from cloudagents.domain.runs import (
    OutboxMessage,
    RunRecord,
    StepMessage,
    ToolCallRecord,
    ToolMessage,
    WakeUp,
)
from cloudagents.engine import waits
from cloudagents.engine.plan import step_message, timed_out
from cloudagents.runtime.approvals import ApprovalError, Approvals
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import RunExecutor

log = logging.getLogger(__name__)
# Past a lease, give the holder's own redelivery a moment before dispatching the call again.
LEASE_SLACK_SECONDS = 1.0
# A wait's wake-ups back off up to this many times WAKE_SECONDS apart.
MAX_BACKOFF = 16


def tool_dispatch(record: ToolCallRecord) -> OutboxMessage:
    return OutboxMessage.of("tools", ToolMessage.of(record))


def stalled(record: ToolCallRecord, now: datetime) -> bool:
    """A pending call that shows no sign of progress: dispatching it again is what moves it."""
    if record.status == "running":
        return record.lease_until is None or record.lease_until <= now
    if record.status == "pending" and record.child_run_id is not None:
        return True  # the invoker looks at the child: starts it if lost, or takes its result
    if record.status == "pending":
        return record.deferred_until is None or record.deferred_until <= now
    return True  # done, but still on the run's pending list: its delivery died after saving


class WakeUps:
    """Applies wake-up tasks."""

    def __init__(self, deps: Deps, executor: RunExecutor) -> None:
        self.deps = deps
        self.executor = executor

    async def handle(self, wake: WakeUp) -> str:
        run = await self.deps.runs.get_run(wake.run_id)
        if run is None:
            return "gone"
        if run.finished:
            return "finished"
        now = self.deps.clock()
        if wake.approval is not None:
            return await self._expire(run.run_id, wake.approval)
        if wake.item is not None:
            return await self._dispatch_deferred(run, wake.item)
        if wake.step:
            # A step our own LLM limits deferred: apply it now (its seq guards a duplicate).
            if wake.seq != run.seq:
                return "moved-on"
            return await self.executor.handle_step(StepMessage(run_id=run.run_id, seq=run.seq))
        if wake.seq is not None and wake.seq != run.seq:
            return "moved-on"
        waiting = run.status in waits.WAITING_STATUSES
        if wake.seq is None:
            # The deadline wake-up ends the run at its deadline; it starts no chain of its own.
            if run.deadline_at is None:
                return "no-deadline"
            if now >= run.deadline_at:
                return await self._time_out(run, now)
            if waiting:
                return "waiting"  # the wait's own wake-ups carry it to the deadline
            key = f"deadline-{wake.gen:04d}"
            if not await self._claim(run.run_id, key):
                return "duplicate"
            # Early (a clock ahead of the task's): the deadline wake-up must not be lost.
            await self.deps.schedule_wake(
                WakeUp(run_id=run.run_id, at=run.deadline_at, gen=wake.gen + 1)
            )
            await self.deps.runs.finish_wake(run.run_id, key)
            return "not-yet"
        if not waiting:
            return "busy"
        key = f"{run.seq:06d}-{wake.gen:04d}"
        if not await self._claim(run.run_id, key):
            return "duplicate"  # another copy of this wake-up did the work and scheduled the next
        outcome = await self._wake_waiting(run, now, wake.gen)
        await self.deps.runs.finish_wake(run.run_id, key)
        return outcome

    async def _claim(self, run_id: str, key: str) -> bool:
        """True: this delivery handles the wake-up; False: a duplicate of one handled. While
        another delivery holds it, a ``TransientError`` (503): Cloud Tasks retries later, when
        it is finished or, its handler dead, taken over (``RunStore.claim_wake``)."""
        claim = await self.deps.runs.claim_wake(run_id, key)
        if claim == "held":
            raise TransientError(f"wake-up {key} of run {run_id} is being handled")
        return claim == "claimed"

    async def _expire(self, run_id: str, approval_id: str) -> str:
        try:
            return "approval-" + await Approvals(self.deps, self.executor).expire(
                run_id, approval_id
            )
        except ApprovalError:
            return "approval-gone"

    async def _time_out(self, run: RunRecord, now: datetime) -> str:
        waiting_for = None
        if run.status in waits.WAITING_STATUSES:
            names = ", ".join(f"{c.call.name}#{c.index}" for c in await self._pending(run))
            asked = ", ".join(p.id for p in run.pending if p.kind == "approval")
            waiting_for = (
                " and ".join(
                    part
                    for part in (
                        f"tool calls: {names}" if names else "",
                        f"approvals: {asked}" if asked else "",
                    )
                    if part
                )
                or "tool calls: nothing"
            )
        overdue = timed_out(run, now, waiting_for)
        assert overdue is not None
        return await self.executor.stop(run, overdue)

    async def _pending(self, run: RunRecord) -> list[ToolCallRecord]:
        calls = {c.doc_id: c for c in await self.deps.runs.tool_calls(run.run_id, run.seq - 1)}
        waited = [p.id for p in run.pending if p.kind in ("tool_call", "child_run")]
        return [calls[p] for p in waited if p in calls]

    async def _wake_waiting(self, run: RunRecord, now: datetime, gen: int) -> str:
        if run.deadline_at is not None and now >= run.deadline_at:
            return await self._time_out(run, now)
        for item in run.pending:
            if item.kind == "approval" and item.deadline is not None and item.deadline <= now:
                # Its expiry task is late or lost: expire it here (the same guarded write).
                await self._expire(run.run_id, item.id)
        pending = await self._pending(run)
        quiet = (now - run.updated_at).total_seconds() >= self.deps.settings.wake_seconds
        if not run.pending and not quiet:
            outcome = "progressing"  # the last result came in lately: its step message is fresh
        elif not run.pending:
            # Every result is in, but the step that applies them has not run for a while.
            await self.deps.publish(run.outbox or [step_message(run.run_id, run.seq)])
            await self._note(run, "woken: the results are in; stepping the run again")
            outcome = "stepped"
        else:
            stale = [c for c in pending if stalled(c, now)]
            if stale:
                await self.deps.publish([tool_dispatch(c) for c in stale])
                names = ", ".join(f"{c.call.name}#{c.index}" for c in stale)
                await self._note(run, f"woken: dispatched again {names}")
            outcome = f"redispatched:{len(stale)}" if stale else "waiting"
        after = WakeUp(
            run_id=run.run_id,
            seq=run.seq,
            at=self._next_wake(run, pending, now, gen + 1),
            gen=gen + 1,
        )
        await self.deps.schedule_wake(after)
        return outcome

    def _next_wake(
        self, run: RunRecord, pending: list[ToolCallRecord], now: datetime, gen: int
    ) -> datetime:
        """Backing off: a wait that shows no progress is looked at ``WAKE_SECONDS`` after it
        began, then twice, four times… as long again (at most ``MAX_BACKOFF`` times), so a
        backlog of messages that are slow, not lost, is not made longer by the wake-ups' own
        dispatches; sooner where a lease or a deferral ends, and never after the deadline."""
        seconds = self.deps.settings.wake_seconds
        at = now + timedelta(seconds=seconds * min(2**gen, MAX_BACKOFF))
        for call in pending:
            if call.status == "running" and call.lease_until is not None and call.lease_until > now:
                at = min(at, call.lease_until + timedelta(seconds=LEASE_SLACK_SECONDS))
            elif call.deferred_until is not None and call.deferred_until > now:
                at = min(at, call.deferred_until + timedelta(seconds=seconds))
        deadline = waits.earliest_deadline(run)
        if deadline is not None:
            at = min(at, deadline)
        return max(at, now + timedelta(seconds=LEASE_SLACK_SECONDS))

    async def _dispatch_deferred(self, run: RunRecord, item: str) -> str:
        seq_text, _, index_text = item.partition("-")
        if not (seq_text.isdigit() and index_text.isdigit()):
            return "bad-item"
        record = await self.deps.runs.get_tool_call(run.run_id, int(seq_text), int(index_text))
        if record is None or item not in run.pending_tool_calls or run.seq != record.seq + 1:
            return "moved-on"
        await self.deps.publish([tool_dispatch(record)])
        return "dispatched-deferred"

    async def _note(self, run: RunRecord, status: str) -> None:
        """Say that a wake-up moved the run (the fault suite counts these lines). Not a run
        event: one written after the step's tool results could sort before a late result and
        break the stream's gap-free order."""
        log.info(
            "run woken", extra={"fields": {"run_id": run.run_id, "seq": run.seq, "status": status}}
        )
