"""Reading a run's events in order, gap-free, until its terminal event.

Event ids sort in the order events happen (``{seq:06d}-{phase}{n:04d}``), so a reader that
resumes after the last id it saw (``Last-Event-ID``, ``?after=``) gets exactly what it missed.
One subtlety keeps that true: the tool results of one step (phase ``c``) are written by
concurrent tool calls in any order, so a result is returned only once every lower-numbered
result of its step is stored (or the run has moved past the step). A run finished without a
terminal event (cancelled) ends with a ``failed`` event made from its result, with the same id
for every reader.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from cloudagents.domain.events import TERMINAL_EVENT_TYPES, Completed, Failed, RunEvent, event_id
from cloudagents.domain.runs import RunRecord
from cloudagents.graphs.events import TERMINAL, WorkflowEvent, resume_point
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.runtime.deps import Deps

RUN_CHECK_SECONDS = 1.0
SUCCESS_EXITS = frozenset({"SATISFIED", "HANDOFF"})
_EVENT_ID = re.compile(r"^(\d{6,})-([a-z])(\d{4,})$")


def _parse_id(value: str) -> tuple[int, str, int] | None:
    match = _EVENT_ID.match(value)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(3))


def gap_free_prefix(events: list[RunEvent], after: str | None) -> list[RunEvent]:
    """The longest prefix of ``events`` (sorted by id, all after ``after``) that no event still
    to be written can sort into. Only tool results (phase ``c``) of the latest step present are
    written out of order; a result waits until the ones numbered below it are stored."""
    parsed = [_parse_id(e.id) for e in events]
    latest = max((p[0] for p in parsed if p is not None), default=-1)
    next_result: dict[int, int] = {}
    cursor = _parse_id(after) if after else None
    if cursor is not None and cursor[1] == "c":
        next_result[cursor[0]] = cursor[2] + 1
    ready: list[RunEvent] = []
    for event, key in zip(events, parsed, strict=True):
        if key is not None and key[1] == "c" and key[0] == latest:
            if key[2] != next_result.get(key[0], 0):
                break
            next_result[key[0]] = key[2] + 1
        ready.append(event)
    return ready


class RunEventFollower:
    """Reads a run's events in order, gap-free, until its terminal event.

    ``poll()`` returns what can be sent now (possibly nothing); ``finished`` turns true once the
    terminal event has been returned or the run ended without one."""

    def __init__(
        self,
        deps: Deps,
        run_id: str,
        *,
        after: str | None = None,
        run_check_seconds: float = RUN_CHECK_SECONDS,
    ) -> None:
        self.deps = deps
        self.run_id = run_id
        self.after = after or None
        self.finished = False
        self.run_check_seconds = run_check_seconds
        self._last_run_check = 0.0
        self.run: RunRecord | None = None

    async def poll(self) -> list[RunEvent]:
        """What is stored and can be sent now; when nothing is, every ``run_check_seconds``
        a look at the run document (has it ended without a terminal event?)."""
        if self.finished:
            return []
        ready = await self.read_new()
        if ready or self.finished:
            return ready
        if time.monotonic() - self._last_run_check < self.run_check_seconds:
            return []
        return await self.check_run(await self.deps.runs.get_run(self.run_id))

    async def read_new(self) -> list[RunEvent]:
        """One events query: the stored events after ``after`` that can be sent now."""
        if self.finished:
            return []
        stored = await self.deps.runs.events(self.run_id, after=self.after)
        return self._through_terminal(gap_free_prefix(stored, self.after))

    def _through_terminal(self, events: list[RunEvent]) -> list[RunEvent]:
        for n, event in enumerate(events):
            if event.type in TERMINAL_EVENT_TYPES:
                self.finished = True
                events = events[: n + 1]
                break
        if events:
            self.after = events[-1].id
        return events

    async def check_run(self, run: RunRecord | None) -> list[RunEvent]:
        """Given the run document just read: the events to send if the run has finished
        (its last ones, or the closing event of a run cancelled without one)."""
        self._last_run_check = time.monotonic()
        self.run = run
        if self.finished:
            return []
        if run is None:
            self.finished = True
            return []
        if not run.finished:
            return []
        # Finished: every event is written now but late tool results of a cancelled step.
        ready = self._through_terminal(await self.deps.runs.events(self.run_id, after=self.after))
        if self.finished:
            return ready
        self.finished = True
        everything = await self.deps.runs.events(self.run_id)
        if any(e.type in TERMINAL_EVENT_TYPES for e in everything) or run.result is None:
            return ready
        closing_id = event_id(run.seq, "b", 0)
        if self.after is not None and closing_id <= self.after:
            return ready
        result = run.result
        closing: RunEvent
        if result.exit.value in SUCCESS_EXITS:
            closing = Completed(
                run_id=run.run_id,
                seq=run.seq,
                id=closing_id,
                exit=result.exit.value,
                total_tokens=result.total_tokens,
            )
        else:
            closing = Failed(
                run_id=run.run_id,
                seq=run.seq,
                id=closing_id,
                exit=result.exit.value,
                error=str(result.payload.get("reason", "")),
            )
        self.after = closing_id
        return [*ready, closing]


WORKFLOW_POLL_SECONDS = (0.2, 2.0)  # a workflow run's events query: fastest, slowest


def after_resume(event: WorkflowEvent, after: str | None) -> bool:
    """Whether a reader that resumes after ``after`` is sent ``event``: everything past it,
    and every node event of the superstep ``after`` is in (their ids sort by task, not time:
    ``graphs.events.resume_point``)."""
    if after is None:
        return True
    point = resume_point(after)
    return event.id > after or (point is not None and event.id > point and "-n-" in event.id)


async def workflow_events(
    store: WorkflowStore, workflow_id: str, *, after: str | None = None
) -> AsyncIterator[WorkflowEvent]:
    """A workflow run's events as they are written, through its ``workflow_ended``: the store
    polled every 0.2 s, the interval doubling to 2 s while nothing arrives. Node events of the
    open superstep are re-read with it (their ids sort by task, not time), each sent once."""
    cursor = resume_point(after)
    sent: set[str] = set()
    interval = WORKFLOW_POLL_SECONDS[0]
    while True:
        stored = await store.events(workflow_id, after=cursor)
        batch = [e for e in stored if e.id not in sent and after_resume(e, after)]
        after = None  # only the first read can hold what the reader saw
        for event in batch:
            sent.add(event.id)
            yield event
            if event.type == TERMINAL:
                return
        if batch:
            # Everything before the open superstep's node events is final: move past it.
            cursor = resume_point(batch[-1].id)
            sent = {i for i in sent if cursor is None or i > cursor}
            interval = WORKFLOW_POLL_SECONDS[0]
        else:
            interval = min(interval * 2, WORKFLOW_POLL_SECONDS[1])
        await asyncio.sleep(interval)
