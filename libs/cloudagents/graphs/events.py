"""A workflow run's events: what the SSE/WebSocket streams of ``/workflow-runs/{id}/events``
serve. Each is written by the store in the same batch as the durable transition it reports
(``adapters/firestore/graphs.py``), so it exists exactly once per transition:

* ``workflow_started``: the run was created (started, or forked from another run's step);
* ``node_started``: a worker took a task's lease (once per claim: a task re-run after a lost
  lease has a second one);
* ``node_finished`` / ``node_failed``: the task's result was saved (first write wins);
* ``node_redispatched``: a task whose lease expired was handed out again;
* ``superstep_committed``: the barrier commit: the nodes folded in, the next pending;
* ``workflow_ended``: the run stopped (completed, failed, cancelled, step_limit): the stream's
  last event, unless the run is resumed (``workflow_resumed``).

Ids sort in the order a reader may rely on: ``{epoch:03d}.{step:06d}-{phase}-{detail}``, with
``epoch`` the number of resumes before the event, phase ``a`` (start, resume), ``n`` (node
events of the open superstep), ``x`` (its commit), ``z`` (the end). Node events of one
superstep are written by concurrent workers, so their ids sort by task, not by time: a reader
that resumes inside a superstep re-reads it from its start (``resume_point``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from cloudagents.domain.base import Persisted


class _WorkflowEvent(Persisted):
    workflow_id: str
    step: int
    id: str = ""
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class WorkflowStarted(_WorkflowEvent):
    type: Literal["workflow_started"] = "workflow_started"
    graph_hash: str
    pending: list[str]
    priority: str = "normal"
    forked_from: str | None = None
    """``{workflow_id}@{step}`` for a fork."""


class WorkflowResumed(_WorkflowEvent):
    type: Literal["workflow_resumed"] = "workflow_resumed"
    previous_status: str
    step_limit: int
    pending: list[str]


class NodeStarted(_WorkflowEvent):
    type: Literal["node_started"] = "node_started"
    task_id: str
    node: str
    worker: str
    claim: int


class NodeFinished(_WorkflowEvent):
    type: Literal["node_finished"] = "node_finished"
    task_id: str
    node: str
    worker: str
    attempts: int = 1


class NodeFailed(_WorkflowEvent):
    type: Literal["node_failed"] = "node_failed"
    task_id: str
    node: str
    worker: str
    error: str
    attempts: int = 1


class NodeRedispatched(_WorkflowEvent):
    type: Literal["node_redispatched"] = "node_redispatched"
    task_id: str
    node: str
    dispatch: int


class SuperstepCommitted(_WorkflowEvent):
    """``step`` is the superstep now open; ``nodes`` ran in the one before it."""

    type: Literal["superstep_committed"] = "superstep_committed"
    nodes: list[str]
    pending: list[str]
    skipped: list[str] = []
    status: str


class WorkflowEnded(_WorkflowEvent):
    type: Literal["workflow_ended"] = "workflow_ended"
    status: str
    error: str | None = None


WorkflowEvent = Annotated[
    WorkflowStarted
    | WorkflowResumed
    | NodeStarted
    | NodeFinished
    | NodeFailed
    | NodeRedispatched
    | SuperstepCommitted
    | WorkflowEnded,
    Field(discriminator="type"),
]
WORKFLOW_EVENT_ADAPTER: TypeAdapter[WorkflowEvent] = TypeAdapter(WorkflowEvent)
TERMINAL = "workflow_ended"


def workflow_event_id(epoch: int, step: int, phase: str, detail: str) -> str:
    return f"{epoch:03d}.{step:06d}-{phase}-{detail}"


def resume_point(after: str | None) -> str | None:
    """Where a reader resuming after ``after`` starts: a node event's id is rounded down to the
    start of its superstep's node events (which can be written in any order), so nothing is
    missed; events re-sent that way keep their ids, for a client that dedupes."""
    if after is None or "-n-" not in after:
        return after
    return after.split("-n-", 1)[0] + "-n"
