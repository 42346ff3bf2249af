"""One event hub per api process: one follower per watched run, fanned out to its subscribers
(agent runs: ``EventHub``; workflow runs: ``WorkflowHub``, at the end).

Every SSE, WebSocket and GraphQL subscriber of a run on this process shares one ``RunFeed``,
which reads the run's events from the store (``RunEventFollower``: gap-free, in id order) and
puts each event on every subscriber's queue. The feed starts with its first subscriber and
stops when the last one leaves or the run's stream ends.

The idle rule (why an idle viewer costs 70 to 100 reads an hour, not 21,000; see
``docs/streaming.md`` and ``scripts/bench/hub_reads.py``):

- *live*: the events query runs every 0.2 s, the interval doubling to 2 s while nothing
  arrives and back to 0.2 s when something does; the run document is read every
  ``run_check_seconds`` while quiet (to see a cancellation or a change of state).
- *waiting*: once the run document says no model call can be streaming (``waiting_tools``
  with calls pending: every event then comes with a write to the run document), or nothing at
  all has changed for ``quiet_seconds``, only the small run document is read, the interval
  doubling from 2 s to ``idle_max_seconds`` (60 s). When its ``updated_at``, ``seq`` or
  ``status`` changes the feed reads the events and is live again. Streamed chunks are the one
  kind of event written without touching the run document, so a feed waiting on a ``queued``
  or ``running`` run (the quiet fallback) reads the events too on each tick, at twice the
  interval: the first words of a model call that starts after a long silence can arrive up
  to two minutes late, never out of order and never lost.

A subscriber that resumes from an id older than the feed's position is sent its backlog from
the store (ids up to the feed's position, read once) and then the live events, which queued
behind the backlog while it was read: no gap, no duplicate. Each subscriber's queue is bounded;
one that falls ``queue_size`` events behind is dropped with ``close_reason`` set, and can
reconnect with the last id it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloudagents.domain.events import RunEvent
from cloudagents.domain.runs import RunRecord
from cloudagents.engine import waits
from cloudagents.graphs.events import WorkflowEvent
from cloudagents.ports.graphs import WorkflowStore
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.follow import RunEventFollower, after_resume, workflow_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSettings:
    """The feed's polling intervals (seconds) and each subscriber's queue bound (events)."""

    poll_min_seconds: float = 0.2
    poll_max_seconds: float = 2.0
    idle_max_seconds: float = 60.0
    quiet_seconds: float = 30.0
    run_check_seconds: float = 5.0
    queue_size: int = 1000


class _End:
    """Queued after a run's last event, or when the subscriber is dropped."""


_END = _End()


class Subscription:
    """One subscriber's events: iterate it; it ends after the run's terminal event, when the
    feed stops, or when the subscriber fell too far behind (``close_reason`` then says so)."""

    def __init__(self, feed: RunFeed, after: str | None, queue_size: int) -> None:
        self.feed = feed
        self.queue: asyncio.Queue[RunEvent | _End] = asyncio.Queue(maxsize=queue_size)
        self.backlog: asyncio.Task[list[RunEvent]] | None = None
        self.pending: deque[RunEvent] = deque()
        self.close_reason: str | None = None
        self.last_id: str | None = after
        self.ended = False
        self.no_more = False

    def offer(self, event: RunEvent | _End) -> None:
        """Called by the feed: queue ``event``, or drop this subscriber if it is full."""
        if self.close_reason is not None or self.no_more:
            return
        if isinstance(event, _End):
            self.no_more = True
            # Wakes a waiting reader; a full queue has no waiting reader, and ``no_more`` ends
            # the stream once it is drained.
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(event)
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Dropped: it reads what is queued (no gap), then its stream ends.
            self.close_reason = (
                f"subscriber too slow: {self.queue.maxsize} events unread; "
                "reconnect after the last event id received"
            )
            self.no_more = True
            self.feed.remove(self)

    async def next_event(self) -> RunEvent | None:
        """The next event in id order, or ``None`` once the stream has ended. Safe to cancel
        (``asyncio.wait_for`` for keep-alives): nothing is lost by a cancelled wait."""
        while not self.ended:
            if self.backlog is not None:
                self.pending.extend(await asyncio.shield(self.backlog))
                self.backlog = None
            if self.pending:
                event = self.pending.popleft()
            elif self.no_more and self.queue.empty():
                self.ended = True
                return None
            else:
                item = await self.queue.get()
                if isinstance(item, _End):
                    self.ended = True
                    self.close()
                    return None
                event = item
            if self.last_id is not None and event.id <= self.last_id:
                continue  # the feed started behind this subscriber's resume point
            self.last_id = event.id
            return event
        return None

    async def __aiter__(self) -> AsyncIterator[RunEvent]:
        try:
            while (event := await self.next_event()) is not None:
                yield event
        finally:
            self.close()

    def close(self) -> None:
        """Leave the feed (idempotent); the feed stops when its last subscriber leaves."""
        if self.backlog is not None and not self.backlog.done():
            self.backlog.cancel()
        self.feed.remove(self)


def _doc_key(run: RunRecord) -> tuple[object, ...]:
    return (run.updated_at, run.seq, run.status, len(run.pending))


def _cannot_stream(run: RunRecord) -> bool:
    """No model call can be writing chunks: the run waits for its tools' results."""
    return waits.waiting(run)


class RunFeed:
    """The one follower of a run on this process, and its subscribers."""

    def __init__(self, hub: EventHub, run_id: str, after: str | None) -> None:
        self.hub = hub
        self.run_id = run_id
        self.follower = RunEventFollower(
            hub.deps, run_id, after=after, run_check_seconds=hub.settings.run_check_seconds
        )
        self.subscribers: set[Subscription] = set()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False
        self.loop = asyncio.get_running_loop()
        self.mode = "live"
        self._watched: tuple[object, ...] | None = None
        self._changed_at = time.monotonic()

    @property
    def position(self) -> str | None:
        """The id of the last event fanned out (or the first subscriber's resume point)."""
        return self.follower.after

    def add(self, after: str | None) -> Subscription:
        subscription = Subscription(self, after, self.hub.settings.queue_size)
        position = self.position
        if position is not None and (after is None or after < position):
            # Behind the feed: what lies between comes from the store; later events queue now.
            subscription.backlog = asyncio.create_task(self._backlog(after, position))
        self.subscribers.add(subscription)
        if self.task is None:
            self.task = asyncio.create_task(self._follow())
        return subscription

    async def _backlog(self, after: str | None, through: str) -> list[RunEvent]:
        stored = await self.hub.deps.runs.events(self.run_id, after=after)
        return [e for e in stored if e.id <= through]

    def remove(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers:
            self._stop()

    def _stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.hub.forget(self)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def _fan_out(self, events: list[RunEvent]) -> None:
        for event in events:
            for subscription in list(self.subscribers):
                subscription.offer(event)

    async def _follow(self) -> None:
        settings = self.hub.settings
        interval = settings.poll_min_seconds
        try:
            while not self.stopped and not self.follower.finished:
                try:
                    interval = await self._tick(interval)
                except Exception:  # a store error: keep the subscribers, try again later
                    log.warning("feed of run %s: reading failed", self.run_id, exc_info=True)
                    interval = settings.poll_max_seconds
                if self.follower.finished:
                    break
                await asyncio.sleep(interval)
        finally:
            self._end()

    async def _tick(self, interval: float) -> float:
        """One round of reads in the current mode; the interval until the next."""
        settings = self.hub.settings
        follower = self.follower
        if self.mode == "live":
            batch = await follower.poll()
            self._fan_out(batch)
            run = follower.run
            if run is not None and self._watched != _doc_key(run):
                self._watched, self._changed_at = _doc_key(run), time.monotonic()
            if batch:
                self._changed_at = time.monotonic()
                return settings.poll_min_seconds
            if run is not None and (
                _cannot_stream(run) or time.monotonic() - self._changed_at >= settings.quiet_seconds
            ):
                self.mode = "waiting"
                return settings.poll_max_seconds
            return min(interval * 2, settings.poll_max_seconds)
        run = await self.hub.deps.runs.get_run(self.run_id)
        if run is None or run.finished or _doc_key(run) != self._watched:
            self._fan_out(await follower.check_run(run))
            self.mode, self._changed_at = "live", time.monotonic()
            return settings.poll_min_seconds
        if _cannot_stream(run):
            return min(interval * 2, settings.idle_max_seconds)
        # Quiet fallback: the chunks of a model call change no run document.
        batch = await follower.read_new()
        self._fan_out(batch)
        if batch:
            self.mode, self._changed_at = "live", time.monotonic()
            return settings.poll_min_seconds
        return min(interval * 2, 2 * settings.idle_max_seconds)

    def _end(self) -> None:
        for subscription in list(self.subscribers):
            subscription.offer(_END)
        self._stop()


class EventHub:
    """Per api process: the feeds of the runs someone is watching, by run id."""

    def __init__(self, deps: Deps, settings: HubSettings | None = None) -> None:
        self.deps = deps
        self.settings = settings or HubSettings()
        self.feeds: dict[str, RunFeed] = {}

    def subscribe(self, run_id: str, after: str | None = None) -> Subscription:
        """A subscription to ``run_id``'s events after ``after`` (all of them when ``None``)."""
        feed = self.feeds.get(run_id)
        if (
            feed is None
            or feed.stopped
            or feed.follower.finished
            or feed.loop is not asyncio.get_running_loop()  # a test client's own loop
        ):
            feed = RunFeed(self, run_id, after or None)
            self.feeds[run_id] = feed
        return feed.add(after or None)

    def forget(self, feed: RunFeed) -> None:
        if self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]

    def subscriber_count(self, run_id: str | None = None) -> int:
        """Subscribers of ``run_id`` (of every run when ``None``): the feeds' reference counts."""
        feeds = list(self.feeds.values()) if run_id is None else [self.feeds.get(run_id)]
        return sum(len(f.subscribers) for f in feeds if f is not None)


_hub: EventHub | None = None


def hub_for(deps: Deps) -> EventHub:
    """This process's hub (one per ``Deps``: the api builds its ``Deps`` once per process)."""
    global _hub
    if _hub is None or _hub.deps is not deps:
        _hub = EventHub(deps)
    return _hub


# ---- workflow runs ---------------------------------------------------------------------------


class WorkflowFeed:
    """The one reader of a workflow run's events on this process (``follow.workflow_events``),
    fanned out: each event it finds is kept (a run's events are few: about three per node task)
    and put on every subscriber's queue. A subscriber that joins later is sent what the feed
    kept, filtered by its resume point, then the live events: none missed, none twice. One
    that resumes from before where the feed started reads the store on its own."""

    def __init__(self, hub: WorkflowHub, workflow_id: str, start: str | None) -> None:
        self.hub = hub
        self.workflow_id = workflow_id
        self.start = start
        self.kept: list[WorkflowEvent] = []
        self.queues: set[asyncio.Queue[WorkflowEvent | None]] = set()
        self.ended = False
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.create_task(self._follow())

    def covers(self, after: str | None) -> bool:
        """Whether what the feed read (from ``start``) holds everything ``after`` needs."""
        return self.start is None or (after is not None and after >= self.start)

    async def _follow(self) -> None:
        try:
            async for event in workflow_events(self.hub.store, self.workflow_id, after=self.start):
                self.kept.append(event)
                for queue in list(self.queues):
                    queue.put_nowait(event)
        except Exception:
            log.warning("feed of workflow %s: reading failed", self.workflow_id, exc_info=True)
        finally:
            self.ended = True
            for queue in list(self.queues):
                queue.put_nowait(None)
            self.hub.forget(self)

    async def events(self, after: str | None) -> AsyncIterator[WorkflowEvent]:
        queue: asyncio.Queue[WorkflowEvent | None] = asyncio.Queue()
        backlog = [e for e in self.kept if after_resume(e, after)]
        self.queues.add(queue)
        try:
            for event in backlog:
                yield event
            if self.ended and queue.empty():
                return
            while (live := await queue.get()) is not None:
                yield live
        finally:
            self.queues.discard(queue)
            if not self.queues and not self.ended:
                self.task.cancel()  # the last subscriber left
                self.hub.forget(self)


class WorkflowHub:
    """Per api process: the feeds of the workflow runs someone is watching."""

    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.feeds: dict[str, WorkflowFeed] = {}

    def subscribe(self, workflow_id: str, after: str | None = None) -> AsyncIterator[WorkflowEvent]:
        """The run's events after ``after``, through ``workflow_ended``."""
        feed = self.feeds.get(workflow_id)
        if feed is not None and (
            feed.ended or feed.task.done() or feed.loop is not asyncio.get_running_loop()
        ):
            feed = None
        if feed is None:
            feed = WorkflowFeed(self, workflow_id, after)
            self.feeds[workflow_id] = feed
        elif not feed.covers(after):
            return workflow_events(self.store, workflow_id, after=after)  # read on its own
        return feed.events(after)

    def forget(self, feed: WorkflowFeed) -> None:
        if self.feeds.get(feed.workflow_id) is feed:
            del self.feeds[feed.workflow_id]

    def subscriber_count(self, workflow_id: str) -> int:
        feed = self.feeds.get(workflow_id)
        return 0 if feed is None else len(feed.queues)


_workflow_hub: WorkflowHub | None = None


def workflow_hub(store: WorkflowStore) -> WorkflowHub:
    """This process's workflow hub (one per store: the api builds its ``Deps`` once)."""
    global _workflow_hub
    if _workflow_hub is None or _workflow_hub.store is not store:
        _workflow_hub = WorkflowHub(store)
    return _workflow_hub
