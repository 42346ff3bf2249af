"""The in-process dispatcher: Pub/Sub push and Cloud Tasks for one process.

``Agent.run`` and ``DistributedAgent.run`` drive the services' own ``RunExecutor``,
``ToolInvoker``, ``WakeUps`` and ``ContextSnapshotter``; this class is what carries their
messages between them. It is the ``EventBus`` and the ``TaskQueue`` of their ``Deps``:

* a message of a run of this process on a topic with a handler here (steps -> the executor, tool
  calls -> the invoker, snapshots -> the snapshotter) is delivered to it, at least once; a run
  starts with ``submit`` (the executor's ``begin``, what an intent does);
* a wake-up task (``Deps.schedule_wake``) is delivered to the wake-up handler at its time, by an
  asyncio timer (a duplicate name while one is pending is dropped, as Cloud Tasks does);
* any other topic (handoff offers, the tool audit trail), and any message of a run not driven
  here, goes to the ``outward`` bus: Pub/Sub for ``DistributedAgent``; for ``Agent.run`` by
  default an ``InMemoryEventBus`` that keeps them for inspection.

Order is kept per run: each run has a lane, worked by one task, that delivers its executor,
snapshot and outward messages one after the other in publish order (so a handoff offer leaves
after the snapshot it points to is written). Tool calls and wake-ups run as tasks of their own
beside the lane, as the tool invoker and the executor's wake-up route do beside each other: the
tools of a step run in parallel, and a wake-up can end a run whose tool hangs.

A handler that raises is retried after a short backoff (doubling, ``max_attempts`` in all) like a
redelivery; a ``PermanentMessageError``, or a retryable failure that used up its attempts, is kept
as a dead letter of the run (``settle`` raises it if the run then cannot finish).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudagents.domain.errors import PermanentMessageError
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import RunRecord, SnapshotMessage, StepMessage, ToolMessage, WakeUp
from cloudagents.ports.bus import EventBus
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import RunExecutor
from cloudagents.runtime.invoker import ToolInvoker
from cloudagents.runtime.snapshotter import ContextSnapshotter
from cloudagents.runtime.wakeups import WakeUps

log = logging.getLogger(__name__)
WAKE_URL = "inprocess://run-executor"
"""``Settings.wake_url`` of in-process ``Deps``: wake-up tasks are timers of this process."""
# asyncio timers may fire a little early; a wake-up before its time would only schedule another.
TIMER_SLACK_SECONDS = 0.005

Work = Callable[[], Awaitable[str]]
_current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cloudagents_dispatch_run", default=None
)


class RunNotSettled(RuntimeError):
    """A run that can make no more progress in this process and has not finished."""


@dataclass
class DeadLetter:
    """A delivery that was given up on, and why."""

    run_id: str
    what: str
    error: BaseException


@dataclass
class _Lane:
    """One run's deliveries: the ordered queue, the tasks beside it, its pending timers."""

    queue: deque[tuple[str, Work]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    children: list[str] = field(default_factory=list)  # child runs of agent-to-agent calls

    @property
    def ordered_idle(self) -> bool:
        return not self.queue and (self.worker is None or self.worker.done())

    def close(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        for task in self.tasks:
            task.cancel()
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()


class InProcessDispatcher:
    """Delivers the outbox of in-process runs to the services' handlers (see the module)."""

    def __init__(
        self,
        *,
        outward: EventBus,
        max_attempts: int = 5,
        backoff_seconds: float = 0.05,
    ) -> None:
        self.outward = outward
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.dead_letters: list[DeadLetter] = []
        self._lanes: dict[str, _Lane] = {}
        self._deps: Deps | None = None
        self._roles: dict[str, str] = {}

    def bind(self, deps: Deps) -> None:
        """Build the handlers over ``deps`` (whose ``bus`` and ``tasks`` are this dispatcher)."""
        self._deps = deps
        self.executor = RunExecutor(deps)
        self.invoker = ToolInvoker(deps)
        self.wakeups = WakeUps(deps, self.executor)
        self.snapshotter = ContextSnapshotter(deps)
        self._roles = {t.name: t.role for t in deps.topology.topics}

    @property
    def deps(self) -> Deps:
        if self._deps is None:
            raise RuntimeError("InProcessDispatcher.bind(deps) was not called")
        return self._deps

    # -- EventBus ----------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        body: dict[str, Any] = json.loads(data)
        run_id = str(body.get("run_id") or _current_run.get() or "")
        role = self._roles.get(topic)
        if role == "intents" and self._child_of_a_lane(body) and run_id not in self._lanes:
            # An agent-to-agent call of a run driven here: the child run is driven here too.
            self._open_child(run_id, str(body["payload"]["parent_call"]["run_id"]))
        lane = self._lanes.get(run_id)
        if lane is None:
            # Not a run of this process (or one already settled): it is for the outside world.
            return await self.outward.publish(topic, data, attributes)
        match role:
            case "steps":
                step = StepMessage.model_validate(body)
                self._enqueue(run_id, f"step {step.seq}", lambda: self.executor.handle_step(step))
            case "snapshots":
                snap = SnapshotMessage.model_validate(body)
                self._enqueue(run_id, f"snapshot {snap.seq}", lambda: self.snapshotter.handle(snap))
            case "tools":
                call = ToolMessage.model_validate(body)
                what = f"tool call {call.seq}-{call.index}"
                self._spawn(run_id, what, lambda: self.invoker.handle(call))
            case "intents":
                intent = IntentionMessage.model_validate(body)
                self._enqueue(run_id, "intent", lambda: self.executor.handle_intent(intent))
            case _:

                async def send() -> str:
                    await self.outward.publish(topic, data, attributes)
                    return "published"

                self._enqueue(run_id, f"publish to {topic}", send)
        return f"inprocess-{run_id}"

    def _child_of_a_lane(self, body: dict[str, Any]) -> bool:
        payload = body.get("payload")
        call = payload.get("parent_call") if isinstance(payload, dict) else None
        return isinstance(call, dict) and call.get("run_id") in self._lanes

    def _open_child(self, run_id: str, parent_id: str) -> None:
        self._lanes[run_id] = _Lane()
        self._lanes[parent_id].children.append(run_id)

    # -- TaskQueue ---------------------------------------------------------------------------

    async def schedule(
        self, queue: str, url: str, body: bytes, at: datetime, *, name: str | None = None
    ) -> str:
        task_name = name or f"task-{id(body)}"
        if queue != self.deps.topology.wake_queue.name:
            log.warning("no in-process handler for queue %s: task %s dropped", queue, task_name)
            return task_name
        wake = WakeUp.model_validate_json(body)
        lane = self._lanes.get(wake.run_id)
        if lane is None or task_name in lane.timers:
            return task_name
        delay = max(0.0, (at - self.deps.clock()).total_seconds()) + TIMER_SLACK_SECONDS

        def fire() -> None:
            lane.timers.pop(task_name, None)
            self._spawn(wake.run_id, f"wake-up {task_name}", lambda: self.wakeups.handle(wake))

        lane.timers[task_name] = asyncio.get_running_loop().call_later(delay, fire)
        return task_name

    # -- runs --------------------------------------------------------------------------------

    def open(self, run_id: str) -> None:
        """Take the run's messages from now on (before its first step is applied)."""
        if run_id in self._lanes:
            raise ValueError(f"run {run_id!r} is already being driven in this process")
        self._lanes[run_id] = _Lane()

    def submit(self, run_id: str, what: str, work: Work) -> None:
        """Deliver ``work`` (the run's opening intent) in the run's lane."""
        self._enqueue(run_id, what, work)

    async def settle(self, run_id: str) -> RunRecord:
        """Wait until the run is finished and its lane has delivered everything, then stop
        what is still pending for it (timers, a tool that hangs) and return the finished run."""
        lane = self._lanes[run_id]
        try:
            while True:
                lane.changed.clear()
                if lane.ordered_idle:
                    run = await self.deps.runs.get_run(run_id)
                    if run is not None and run.finished:
                        return run
                    # Given up on (a dead letter) or nothing left that could move it: in
                    # process there is no one to replay it later, so say why now.
                    if not lane.tasks and (lane.dead or not lane.timers):
                        cause = lane.dead[-1].error if lane.dead else None
                        raise RunNotSettled(self._why(run_id, lane, run)) from cause
                await lane.changed.wait()
        finally:
            self.close(run_id)

    def spawn(self, run_id: str, what: str, work: Work) -> None:
        """Deliver ``work`` for the run beside its lane (as a tool call is), at least once."""
        self._spawn(run_id, what, work)

    def close(self, run_id: str) -> None:
        """Forget a run that will not be settled (its driver gave up)."""
        lane = self._lanes.pop(run_id, None)
        if lane is not None:
            lane.close()
            for child in lane.children:
                self.close(child)

    @staticmethod
    def _why(run_id: str, lane: _Lane, run: RunRecord | None) -> str:
        if lane.dead:
            last = lane.dead[-1]
            return f"run {run_id!r} cannot finish: {last.what} failed: {last.error}"
        status = run.status.value if run is not None else "missing"
        return f"run {run_id!r} is {status} with nothing left to deliver"

    # -- delivery ----------------------------------------------------------------------------

    def _enqueue(self, run_id: str, what: str, work: Work) -> None:
        lane = self._lanes[run_id]
        lane.queue.append((what, work))
        if lane.worker is None or lane.worker.done():
            token = _current_run.set(run_id)
            try:
                lane.worker = asyncio.get_running_loop().create_task(self._work(run_id, lane))
            finally:
                _current_run.reset(token)

    def _spawn(self, run_id: str, what: str, work: Work) -> None:
        lane = self._lanes.get(run_id)
        if lane is None:
            return
        token = _current_run.set(run_id)
        try:
            task = asyncio.get_running_loop().create_task(self._deliver(run_id, lane, what, work))
        finally:
            _current_run.reset(token)
        lane.tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            lane.tasks.discard(finished)
            lane.changed.set()

        task.add_done_callback(done)

    async def _work(self, run_id: str, lane: _Lane) -> None:
        while lane.queue:
            what, work = lane.queue.popleft()
            await self._deliver(run_id, lane, what, work)
        lane.changed.set()

    async def _deliver(self, run_id: str, lane: _Lane, what: str, work: Work) -> None:
        """At least once: a failure is delivered again after a backoff, ``max_attempts`` in all."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                outcome = await work()
            except PermanentMessageError as exc:
                self._dead(run_id, lane, what, exc)
                return
            except Exception as exc:
                if attempt == self.max_attempts:
                    self._dead(run_id, lane, what, exc)
                    return
                log.info("%s of run %s failed (%r): delivering it again", what, run_id, exc)
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            else:
                log.debug("%s of run %s: %s", what, run_id, outcome)
                lane.changed.set()
                return

    def _dead(self, run_id: str, lane: _Lane, what: str, error: BaseException) -> None:
        log.warning("%s of run %s given up: %r", what, run_id, error)
        letter = DeadLetter(run_id, what, error)
        lane.dead.append(letter)
        self.dead_letters.append(letter)
        lane.changed.set()
