"""Workflow-run commands shared by the api's routes and GraphQL: one function per command, so
``POST /workflow-runs/{id}/cancel`` and ``mutation cancelWorkflowRun`` do the same thing."""

from __future__ import annotations

from typing import Any

from cloudagents.graphs.agents import agent_runs
from cloudagents.graphs.documents import WorkflowRunDocument
from cloudagents.graphs.superstep import stop
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.trees import cancel_tree

RUN_STATUSES = ("running", "completed", "failed", "cancelled", "step_limit")


class WorkflowCommandError(Exception):
    """A command refused: ``status`` is the HTTP status the api answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def workspace_run(deps: Deps, workflow_id: str) -> WorkflowRunDocument | None:
    """The run, if it exists in this process's workspace."""
    if deps.workflows is None:
        raise RuntimeError("this process has no workflow store (Deps.workflows)")
    run = await deps.workflows.get_run(workflow_id)
    return run if run is not None and run.workspace == deps.settings.workspace else None


def workflow_run_view(
    run: WorkflowRunDocument,
    done: set[str] | None = None,
    children: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A run as the api shows it: status, step, the open superstep's tasks (an agent node's
    with ``agent_runs``, its child runs: ``children``), the state."""
    checkpoint = run.checkpoint
    children = children or {}
    return {
        "workflow_id": run.workflow_id,
        "graph_name": run.graph_name,
        "graph_hash": run.graph_hash,
        "status": checkpoint.status,
        "step": checkpoint.step,
        "step_limit": checkpoint.step_limit,
        "priority": run.priority,
        "forked_from": run.forked_from,
        "resumes": run.resumes,
        "pending": [
            {
                **t.model_dump(mode="json"),
                "done": t.task_id in (done or set()),
                **({"agent_runs": children[t.task_id]} if t.task_id in children else {}),
            }
            for t in checkpoint.pending
        ],
        "state": checkpoint.state,
        "error": checkpoint.error,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
    }


async def describe_workflow_run(deps: Deps, run: WorkflowRunDocument) -> dict[str, Any]:
    """``GET /workflow-runs/{id}``: the view with each open task's ``done`` and an agent node's
    child runs."""
    assert deps.workflows is not None
    pending = run.checkpoint.pending
    found = await deps.workflows.tasks(run.workflow_id, [t.task_id for t in pending])
    done = {t for t, doc in found.items() if doc.result is not None}
    graph = await deps.workflows.get_graph(run.graph_hash)
    children = await agent_runs(deps.runs, graph, run.workflow_id, pending)
    return workflow_run_view(run, done, children)


async def cancel_workflow_run(
    deps: Deps, workflow_id: str, reason: str = "cancelled via the api"
) -> tuple[WorkflowRunDocument, list[str]]:
    """Stop a running run at its last barrier, then cancel the child agent runs its open
    superstep's agent nodes started (and the calls below them, ``runtime/trees.py``), so no
    model keeps spending for a run nobody continues. Returns the stopped run and the child
    run ids cancelled. 404: no such run; 409: it is not running.

    The run stops first: a worker whose child run is cancelled then finds the run stopped and
    saves nothing that advances it."""
    run = await workspace_run(deps, workflow_id)
    if run is None:
        raise WorkflowCommandError(404, f"unknown workflow run {workflow_id!r}")
    assert deps.workflows is not None
    ended = await deps.workflows.stop_run(workflow_id, lambda cp: stop(cp, "cancelled", reason))
    if ended is None:
        status = run.status
        raise WorkflowCommandError(409, f"workflow run {workflow_id!r} is {status}, not running")
    graph = await deps.workflows.get_graph(ended.graph_hash)
    children = await agent_runs(deps.runs, graph, workflow_id, ended.checkpoint.pending)
    cancelled: list[str] = []
    for attempts in children.values():
        for child in attempts:
            if child["status"] != "finished":
                why = f"its workflow run {workflow_id} was cancelled"
                if await cancel_tree(deps, child["run_id"], why) is not None:
                    cancelled.append(child["run_id"])
    return ended, cancelled
