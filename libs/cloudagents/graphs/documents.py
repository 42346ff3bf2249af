"""The documents of distributed graph workflows, as data (``adapters/firestore/graphs.py``
stores them; ``ports/graphs.py`` names what reads them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from cloudagents.domain.base import Model, Persisted
from cloudagents.graphs.superstep import NodeTask, Superstep, TaskResult


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
