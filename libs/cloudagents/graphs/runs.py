"""Starting, forking and resuming distributed workflow runs: the one implementation behind
``DistributedOrchestrator`` (``graphs/distributed.py``), the api's ``/workflows/{graph}/runs``
and ``/workflow-runs/{id}/fork|resume`` routes (``runtime/workflows_api.py``) and workflow
intents on the workspace topic (``runtime/executor.py``).

Each writes its documents in one store batch and then sends the open superstep's tasks
(``Dispatch``); a crash between the two is repaired by the workers' sweep or the superstep's
wake-up (an unclaimed task is dispatched again once its first dispatch lapses) and, for an
intent, by its redelivery.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cloudagents.graphs.dispatch import NodeDispatch, Publish
from cloudagents.graphs.documents import Priority, WorkflowRunDocument
from cloudagents.graphs.superstep import DEFAULT_MAX_STEPS, NodeTask, fork, resume, start
from cloudagents.ports.graphs import WorkflowStore

Dispatch = Callable[[str, Priority, list[NodeTask]], Awaitable[None]]
"""Send the tasks of a superstep being opened: (workflow id, the run's priority band, tasks);
a ``NodeDispatch`` (``graphs/dispatch.py``) chooses Pub/Sub or Cloud Tasks per node type."""

DEFAULT_DISPATCH_SECONDS = 30.0
"""A never-claimed task of a run started by the api or an intent is dispatched again after
this long (by a worker's sweep)."""
_HASH = re.compile(r"^[0-9a-f]{64}$")


class WorkflowRunError(Exception):
    """A request about a workflow run that cannot be served; ``status`` is its HTTP code."""

    status = 400


class UnknownWorkflow(WorkflowRunError, KeyError):
    status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WorkflowConflict(WorkflowRunError):
    """The run exists already, or is not in a state that allows the request."""

    status = 409


def generated_workflow_id() -> str:
    return f"wf-{uuid.uuid4().hex[:12]}"


def publisher(workspace: str, publish: Publish) -> Dispatch:
    """A ``Dispatch`` that publishes every node type's tasks on ``workspace``'s topics (no
    push-dispatched node types; ``graphs/dispatch.py:NodeDispatch`` chooses per node type)."""
    return NodeDispatch(workspace, publish=publish)


async def resolve_graph(store: WorkflowStore, graph: str) -> str:
    """A graph's hash from its hash or its name (the one registered last)."""
    if _HASH.match(graph):
        try:
            await store.get_graph(graph)
        except KeyError:
            raise UnknownWorkflow(f"unknown workflow graph {graph!r}") from None
        return graph
    digest = await store.graph_by_name(graph)
    if digest is None:
        raise UnknownWorkflow(f"unknown workflow graph {graph!r} (neither a hash nor a name)")
    return digest


async def start_workflow_run(
    store: WorkflowStore,
    dispatch: Dispatch,
    *,
    workspace: str,
    graph: str,
    initial_state: Mapping[str, Any] | None = None,
    workflow_id: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    priority: Priority = "normal",
    dispatch_seconds: float,
    existing_ok: bool = False,
) -> tuple[WorkflowRunDocument, bool]:
    """Start a run of ``graph`` (hash or name): checkpoint 0, its tasks, the event, then the
    tasks published. Returns the run and whether this call created it. A taken
    ``workflow_id`` is a ``WorkflowConflict``, unless ``existing_ok`` and the run is this
    graph's in this workspace (a redelivered intent): then its open tasks still without a
    result are published again (harmless: claims are idempotent) and it is returned."""
    digest = await resolve_graph(store, graph)
    compiled = await store.get_graph(digest)
    wid = workflow_id or generated_workflow_id()
    try:
        first = start(compiled, dict(initial_state or {}), workflow_id=wid, max_steps=max_steps)
    except ValueError as exc:
        raise WorkflowRunError(str(exc)) from exc
    try:
        run = await store.create_run(
            first,
            workspace=workspace,
            graph_name=compiled.name,
            dispatch_seconds=dispatch_seconds,
            priority=priority,
        )
    except ValueError as exc:
        found = await store.get_run(wid) if existing_ok else None
        if found is None or found.workspace != workspace or found.graph_hash != digest:
            raise WorkflowConflict(str(exc)) from exc
        if found.status == "running":
            await _dispatch_open(store, dispatch, found)
        return found, False
    await dispatch(wid, priority, list(first.pending))
    return run, True


async def _dispatch_open(
    store: WorkflowStore, dispatch: Dispatch, run: WorkflowRunDocument
) -> None:
    pending = run.checkpoint.pending
    found = await store.tasks(run.workflow_id, [t.task_id for t in pending])
    open_tasks = [t for t in pending if (d := found.get(t.task_id)) is None or d.result is None]
    if open_tasks:
        await dispatch(run.workflow_id, run.priority, open_tasks)


async def _run_in(store: WorkflowStore, workflow_id: str, workspace: str) -> WorkflowRunDocument:
    run = await store.get_run(workflow_id)
    if run is None or run.workspace != workspace:
        raise UnknownWorkflow(f"unknown workflow run {workflow_id!r}")
    return run


async def fork_workflow_run(
    store: WorkflowStore,
    dispatch: Dispatch,
    *,
    workspace: str,
    workflow_id: str,
    step: int,
    updates: Mapping[str, Any] | None = None,
    new_workflow_id: str | None = None,
    max_steps: int | None = None,
    priority: Priority | None = None,
    dispatch_seconds: float,
) -> WorkflowRunDocument:
    """A new run from the barrier commit that opened ``step`` of ``workflow_id``: same pinned
    graph, that state with ``updates`` over it, the same pending tasks; the source run is not
    touched (history is append-only). ``max_steps``: the new run's step limit (default the
    source's); ``priority``: default the source's."""
    source = await _run_in(store, workflow_id, workspace)
    if step < 0:
        raise WorkflowRunError("step must be 0 or more")
    checkpoint = await store.checkpoint(workflow_id, step)
    if checkpoint is None:
        raise UnknownWorkflow(
            f"workflow run {workflow_id!r} has no checkpoint at step {step} "
            f"(it is at step {source.step})"
        )
    wid = new_workflow_id or generated_workflow_id()
    try:
        forked = fork(checkpoint, workflow_id=wid, updates=updates, step_limit=max_steps)
    except ValueError as exc:
        raise WorkflowConflict(str(exc)) from exc
    band = priority or source.priority
    try:
        run = await store.create_run(
            forked,
            workspace=workspace,
            graph_name=source.graph_name,
            dispatch_seconds=dispatch_seconds,
            priority=band,
            forked_from=f"{workflow_id}@{step}",
        )
    except ValueError as exc:
        raise WorkflowConflict(str(exc)) from exc
    await dispatch(wid, band, list(forked.pending))
    return run


async def resume_workflow_run(
    store: WorkflowStore,
    dispatch: Dispatch,
    *,
    workspace: str,
    workflow_id: str,
    max_steps: int | None = None,
    dispatch_seconds: float,
) -> WorkflowRunDocument:
    """Continue a stopped run (cancelled, failed, step_limit) from its last checkpoint: the
    open superstep's tasks without a ``done`` result run again. ``max_steps`` raises the
    run's step limit (its total, as at the start); without it the limit stays, so a run
    stopped at its limit needs it."""
    run = await _run_in(store, workflow_id, workspace)
    if run.status == "running":
        raise WorkflowConflict(
            f"workflow run {workflow_id!r} is running; only a stopped run resumes"
        )

    def again(checkpoint: Any) -> Any:
        limit = checkpoint.step_limit if max_steps is None else max_steps
        return resume(checkpoint, step_limit=limit)

    try:
        resumed = await store.resume_run(workflow_id, again, dispatch_seconds=dispatch_seconds)
    except ValueError as exc:
        raise WorkflowConflict(str(exc)) from exc
    if resumed is None:
        raise UnknownWorkflow(f"unknown workflow run {workflow_id!r}")
    if resumed.dispatch:
        await dispatch(workflow_id, resumed.run.priority, resumed.dispatch)
    return resumed.run
