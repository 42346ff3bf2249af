"""The documents of distributed graph workflows, as data (``adapters/firestore/graphs.py``
stores them; ``ports/graphs.py`` names what reads them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from cloudagents.domain.base import Model, Persisted
from cloudagents.graphs.events import (
    NodeFailed,
    NodeFinished,
    NodeRedispatched,
    NodeStarted,
    SuperstepCommitted,
    WorkflowEnded,
    WorkflowEvent,
    WorkflowResumed,
    WorkflowStarted,
    workflow_event_id,
)
from cloudagents.graphs.superstep import NodeTask, Superstep, TaskResult

Priority = Literal["high", "normal", "low"]
PRIORITY_BANDS: tuple[Priority, ...] = ("high", "normal", "low")
"""Node task priority bands, served in this order (``DistributedWorker``)."""


def now() -> datetime:
    return datetime.now(UTC)


class WorkflowRunDocument(Persisted):
    """``workflow_runs/{id}``: the run and its open superstep's checkpoint."""

    workflow_id: str
    workspace: str
    graph_name: str
    graph_hash: str
    status: str
    step: int
    checkpoint: Superstep
    dispatch_seconds: float | None = None
    """How long a dispatched task may wait for a claim before it is dispatched again, chosen
    when the run starts: every tender and advancer of the run (an orchestrator waiting, a
    worker sweeping) uses it, so one with a longer timeout of its own does not slow the run's
    re-dispatch. None on documents written before it was stored: the tender's own."""
    priority: Priority = "normal"
    """The band its node tasks are published in (a topic per band and node type)."""
    forked_from: str | None = None
    """``{workflow_id}@{step}`` of the checkpoint this run was forked from."""
    resumes: int = 0
    """How many times the run was resumed (the epoch of its event ids)."""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class TaskDocument(Persisted):
    """``workflow_runs/{id}/tasks/{task_id}``: a node task, its lease and its result.

    ``lease_expires_at`` (epoch seconds) is when whoever holds the task (a worker running it,
    or the dispatch itself before any worker claimed it) is presumed gone: a task without a
    result past that time is dispatched again."""

    workflow_id: str
    task: NodeTask
    lease_owner: str | None = None
    lease_expires_at: float
    dispatches: int = 1
    claims: int = 0
    result: TaskResult | None = None
    finished_by: str | None = None
    epoch: int = 0
    """The run's ``resumes`` when this task was (re)opened: the epoch of its events' ids."""


class NodeWorkerDocument(Persisted):
    """``node_workers/{worker_id}``: a pull worker, for listing only (leases decide liveness)."""

    worker_id: str
    workspace: str
    node_types: list[str]
    capacity: int
    active: int = 0
    status: Literal["running", "stopped"] = "running"
    last_seen: datetime = Field(default_factory=now)


ClaimOutcome = Literal["claimed", "done", "held", "stale"]


class Claim(Model):
    """What ``claim`` found: the task is ours now, already has a result, is held by a live
    lease, or belongs to a superstep (or run) that is no longer open."""

    outcome: ClaimOutcome
    run: WorkflowRunDocument | None = None
    task: TaskDocument | None = None


class TaskMessage(Persisted):
    """The Pub/Sub message of one node task: which run, which task (the document has the rest)."""

    workflow_id: str
    task: NodeTask


class SuperstepWake(Persisted):
    """The body of a superstep wake-up task (``{ws}-graphwake`` queue, ``graphs/push.py``):
    look at superstep ``step`` of the run at its leases' expiry. ``gen`` numbers the wake-ups
    of one superstep; each is handled once and schedules the next while the superstep is open."""

    workflow_id: str
    step: int = Field(ge=0)
    gen: int = Field(default=0, ge=0)


def new_run_document(
    checkpoint: Superstep,
    *,
    workspace: str,
    graph_name: str,
    dispatch_seconds: float,
    priority: Priority = "normal",
    forked_from: str | None = None,
) -> WorkflowRunDocument:
    """The run document of a new run whose open checkpoint is ``checkpoint`` (every store)."""
    return WorkflowRunDocument(
        workflow_id=checkpoint.workflow_id,
        workspace=workspace,
        graph_name=graph_name,
        graph_hash=checkpoint.graph_hash,
        status=checkpoint.status,
        step=checkpoint.step,
        checkpoint=checkpoint,
        dispatch_seconds=dispatch_seconds,
        priority=priority,
        forked_from=forked_from,
    )


def open_task_documents(
    checkpoint: Superstep, lease_seconds: float, epoch: int = 0
) -> list[TaskDocument]:
    """The task documents of a checkpoint's pending tasks, as first dispatched."""
    deadline = datetime.now(UTC).timestamp() + lease_seconds
    return [
        TaskDocument(
            workflow_id=checkpoint.workflow_id, task=t, lease_expires_at=deadline, epoch=epoch
        )
        for t in checkpoint.pending
    ]


def reopened_task(task: TaskDocument, lease_seconds: float, epoch: int) -> TaskDocument | None:
    """A resumed run's task document: a failed result or a lapsed or live lease is cleared for
    a new dispatch; a ``done`` result is kept (it ran on the same committed state). None when
    the document is kept as it is."""
    if task.result is not None and task.result.status == "done":
        return None
    return task.model_copy(
        update={
            "result": None,
            "finished_by": None,
            "lease_owner": None,
            "lease_expires_at": datetime.now(UTC).timestamp() + lease_seconds,
            "dispatches": task.dispatches + 1,
            "epoch": epoch,
        }
    )


def node_event_id(task: TaskDocument, kind: str) -> str:
    return workflow_event_id(task.epoch, task.task.step, "n", f"{task.task.task_id}-{kind}")


def claimed_event(task: TaskDocument) -> WorkflowEvent:
    """``task`` as just claimed (its ``claims`` counted)."""
    return NodeStarted(
        workflow_id=task.workflow_id,
        step=task.task.step,
        id=node_event_id(task, f"{task.claims + task.dispatches:03d}s"),
        task_id=task.task.task_id,
        node=task.task.node,
        worker=task.lease_owner or "",
        claim=task.claims,
    )


def result_event(task: TaskDocument) -> WorkflowEvent:
    """``task`` with its result just saved."""
    result = task.result
    assert result is not None
    common = {
        "workflow_id": task.workflow_id,
        "step": task.task.step,
        "id": node_event_id(task, "zz"),
        "task_id": task.task.task_id,
        "node": task.task.node,
        "worker": task.finished_by or "",
        "attempts": result.attempts,
    }
    if result.status == "failed":
        return NodeFailed(**common, error=result.error or "")
    return NodeFinished(**common)


def redispatched_event(task: TaskDocument) -> WorkflowEvent:
    """``task`` as just handed out again (its ``dispatches`` counted)."""
    return NodeRedispatched(
        workflow_id=task.workflow_id,
        step=task.task.step,
        id=node_event_id(task, f"{task.claims + task.dispatches:03d}r"),
        task_id=task.task.task_id,
        node=task.task.node,
        dispatch=task.dispatches,
    )


def started_event(run: WorkflowRunDocument) -> WorkflowEvent:
    cp = run.checkpoint
    return WorkflowStarted(
        workflow_id=run.workflow_id,
        step=cp.step,
        id=workflow_event_id(run.resumes, cp.step, "a", "start"),
        graph_hash=run.graph_hash,
        pending=[t.node for t in cp.pending],
        priority=run.priority,
        forked_from=run.forked_from,
    )


def resumed_event(before: WorkflowRunDocument, after: WorkflowRunDocument) -> WorkflowEvent:
    cp = after.checkpoint
    return WorkflowResumed(
        workflow_id=after.workflow_id,
        step=cp.step,
        id=workflow_event_id(after.resumes, cp.step, "a", "resume"),
        previous_status=before.status,
        step_limit=cp.step_limit,
        pending=[t.node for t in cp.pending],
    )


def transition_events(run: WorkflowRunDocument, nxt: Superstep) -> list[WorkflowEvent]:
    """What a barrier commit (or a stop) from ``run``'s open checkpoint to ``nxt`` reports."""
    events: list[WorkflowEvent] = []
    if nxt.step != run.step:
        events.append(
            SuperstepCommitted(
                workflow_id=run.workflow_id,
                step=nxt.step,
                id=workflow_event_id(run.resumes, run.step, "x", "commit"),
                nodes=list(nxt.completed),
                pending=[t.node for t in nxt.pending],
                skipped=list(nxt.skipped),
                status=nxt.status,
            )
        )
    if nxt.status != "running":
        events.append(
            WorkflowEnded(
                workflow_id=run.workflow_id,
                step=nxt.step,
                id=workflow_event_id(run.resumes, nxt.step, "z", "end"),
                status=nxt.status,
                error=nxt.error,
            )
        )
    return events


class Resumed(Model):
    """A resumed run and the tasks of its open superstep to publish again."""

    run: WorkflowRunDocument
    dispatch: list[NodeTask]
