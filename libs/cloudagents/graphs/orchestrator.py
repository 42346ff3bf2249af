"""Run compiled graphs in process: supersteps on asyncio, checkpoints, status, cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudagents.domain.base import Model
from cloudagents.graphs.bindings import Bindings, resolve
from cloudagents.graphs.errors import (
    GraphError,
    StepLimitReached,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
)
from cloudagents.graphs.execution import Sleep, run_task
from cloudagents.graphs.graph import Graph
from cloudagents.graphs.registry import NodeRegistry
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.state import State
from cloudagents.graphs.superstep import (
    DEFAULT_MAX_STEPS,
    NodeTask,
    RunStatus,
    Superstep,
    TaskResult,
    advance,
    fork,
    resume,
    start,
    stop,
)
from cloudagents.graphs.worker import Worker


class WorkflowStatus(Model):
    """Where a run is: status, current superstep, and its nodes done and still pending."""

    workflow_id: str
    graph_name: str
    graph_hash: str
    status: RunStatus
    step: int
    nodes_done: list[str] = []
    nodes_pending: list[str] = []
    error: str | None = None


@dataclass
class _Run:
    status: WorkflowStatus
    checkpoints: list[Superstep] = field(default_factory=list)
    cancel_requested: bool = False


class Orchestrator:
    """Executes graphs superstep by superstep; the parallel nodes of one superstep run
    concurrently, on this event loop or on the given ``workers`` (dispatched by node type).

    Every superstep's ``Superstep`` checkpoint is kept (``get_checkpoints``); a run that hits
    ``max_steps`` raises ``StepLimitReached`` and ``resume`` continues it from there.
    """

    def __init__(
        self,
        registry: NodeRegistry | None = None,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        workers: Iterable[Worker] = (),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.registry = registry
        self.max_steps = max_steps
        self.workers = list(workers)
        self._sleep = sleep  # injectable so tests can observe backoff without waiting
        self._runs: dict[str, _Run] = {}

    async def execute(
        self,
        graph: Graph | CompiledGraph,
        initial_state: Mapping[str, Any] | State | None = None,
        workflow_id: str | None = None,
    ) -> State:
        """Run ``graph`` to END and return the final state; raises ``WorkflowError`` otherwise."""
        compiled, bindings = self._prepare(graph)
        if isinstance(initial_state, State):
            workflow_id = workflow_id or initial_state.workflow_id
        wid = workflow_id or f"wf-{uuid.uuid4().hex[:12]}"
        existing = self._runs.get(wid)
        if existing is not None and existing.status.status == "running":
            raise ValueError(f"workflow {wid} is already running")
        first = start(
            compiled, dict(initial_state or {}), workflow_id=wid, max_steps=self.max_steps
        )
        return await self._drive(compiled, bindings, first)

    async def resume(
        self, graph: Graph | CompiledGraph, checkpoint: Superstep, *, max_steps: int | None = None
    ) -> State:
        """Continue a run stopped by its step limit, a cancel or a failed node from its
        checkpoint (the stopped superstep's nodes run again), for up to ``max_steps`` more."""
        compiled, bindings = self._prepare(graph)
        if compiled.hash != checkpoint.graph_hash:
            raise GraphError(
                f"checkpoint of {checkpoint.workflow_id} pins graph {checkpoint.graph_hash[:12]}, "
                f"not {compiled.hash[:12]}"
            )
        again = resume(checkpoint, max_steps=max_steps or self.max_steps)
        return await self._drive(compiled, bindings, again)

    async def fork(
        self,
        graph: Graph | CompiledGraph,
        checkpoint: Superstep,
        updates: Mapping[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
        max_steps: int | None = None,
    ) -> State:
        """Run a new workflow from ``checkpoint`` (e.g. one of ``get_checkpoints``): its state
        with ``updates`` written over, its pending nodes next; the source run is untouched.
        ``max_steps``: the new run's step limit (default: the checkpoint's)."""
        compiled, bindings = self._prepare(graph)
        if compiled.hash != checkpoint.graph_hash:
            raise GraphError(
                f"checkpoint of {checkpoint.workflow_id} pins graph {checkpoint.graph_hash[:12]}, "
                f"not {compiled.hash[:12]}"
            )
        wid = workflow_id or f"wf-{uuid.uuid4().hex[:12]}"
        if wid in self._runs:
            raise ValueError(f"workflow {wid} exists; a fork needs a new id")
        forked = fork(checkpoint, workflow_id=wid, updates=updates, step_limit=max_steps)
        return await self._drive(compiled, bindings, forked)

    def get_workflow_status(self, workflow_id: str) -> WorkflowStatus:
        """The status of a run this orchestrator knows; KeyError otherwise."""
        try:
            return self._runs[workflow_id].status.model_copy(deep=True)
        except KeyError:
            raise KeyError(f"unknown workflow {workflow_id!r}") from None

    def cancel_workflow(self, workflow_id: str) -> bool:
        """Ask a running workflow to stop at its next superstep boundary; False if not running."""
        run = self._runs.get(workflow_id)
        if run is None or run.status.status != "running":
            return False
        run.cancel_requested = True
        return True

    def list_workflows(self, status: RunStatus | None = None) -> list[WorkflowStatus]:
        """Known runs (optionally of one status), in start order."""
        return [
            r.status.model_copy(deep=True)
            for r in self._runs.values()
            if status is None or r.status.status == status
        ]

    def get_checkpoints(self, workflow_id: str) -> list[Superstep]:
        """Every superstep checkpoint of a run, oldest first."""
        try:
            return list(self._runs[workflow_id].checkpoints)
        except KeyError:
            raise KeyError(f"unknown workflow {workflow_id!r}") from None

    def _prepare(self, graph: Graph | CompiledGraph) -> tuple[CompiledGraph, Bindings]:
        # Compile again with this orchestrator's registry: the names must resolve here.
        compiled = graph.compile(self.registry) if isinstance(graph, Graph) else graph
        bindings = resolve(compiled, self.registry, with_nodes=not self.workers)
        if self.workers:
            for name, spec in sorted(compiled.nodes.items()):
                if spec.agent is not None:
                    continue  # an agent node is its agent's run, not a worker's function
                if not any(w.serves(spec.node_type) for w in self.workers):
                    raise GraphError(
                        f"node {name!r}: no worker serves node type {spec.node_type!r}"
                    )
        return compiled, bindings

    async def _drive(
        self, graph: CompiledGraph, bindings: Bindings, checkpoint: Superstep
    ) -> State:
        wid = checkpoint.workflow_id
        run = _Run(
            status=WorkflowStatus(
                workflow_id=wid,
                graph_name=graph.name,
                graph_hash=graph.hash,
                status="running",
                step=checkpoint.step,
            ),
            checkpoints=list(self._runs[wid].checkpoints) if wid in self._runs else [],
        )
        self._runs[wid] = run
        while checkpoint.status == "running":
            if run.cancel_requested:
                checkpoint = stop(checkpoint, "cancelled", "cancelled by cancel_workflow")
                break
            run.status.step = checkpoint.step
            run.status.nodes_done = []
            run.status.nodes_pending = [t.node for t in checkpoint.pending]
            try:
                results = await asyncio.gather(
                    *(self._run(graph, bindings, checkpoint, t, run) for t in checkpoint.pending)
                )
            except BaseException as error:
                # Not a node failure (those come back as results) but a broken dispatch, e.g.
                # a stopped worker: record it so the status does not say running forever.
                # An asyncio cancel of execute() itself ends the run cancelled, not failed.
                cancelled = isinstance(error, asyncio.CancelledError)
                run.status.status = "cancelled" if cancelled else "failed"
                run.status.error = f"{type(error).__name__}: {error}"
                raise
            checkpoint = advance(graph, checkpoint, results, bindings.reducers)
            run.checkpoints.append(checkpoint)
        if checkpoint.status == "cancelled":
            run.checkpoints.append(checkpoint)
        run.status.status = checkpoint.status
        run.status.step = checkpoint.step
        run.status.error = checkpoint.error
        run.status.nodes_pending = [t.node for t in checkpoint.pending]
        if checkpoint.status == "completed":
            return State(wid, checkpoint.state, step=checkpoint.step)
        raise _ERRORS[checkpoint.status](
            f"workflow {wid} {checkpoint.status}: {checkpoint.error}",
            workflow_id=wid,
            checkpoint=checkpoint,
        )

    async def _run(
        self,
        graph: CompiledGraph,
        bindings: Bindings,
        checkpoint: Superstep,
        task: NodeTask,
        run: _Run,
    ) -> TaskResult:
        async def job(node: Callable[..., Any]) -> TaskResult:
            return await run_task(
                graph,
                task,
                checkpoint.state,
                node,
                bindings.routers.get(task.node),
                workflow_id=checkpoint.workflow_id,
                reducers=bindings.reducers,
                sleep=self._sleep,
            )

        if self.workers and task.node not in bindings.nodes:
            serving = [w for w in self.workers if w.serves(task.node_type)]
            worker = min(serving, key=lambda w: w.load)  # least loaded; ties: listed first
            result = await worker.submit(task, job)
        else:
            result = await job(bindings.nodes[task.node])
        run.status.nodes_done.append(task.node)
        run.status.nodes_pending.remove(task.node)
        return result


_ERRORS: dict[str, type[WorkflowError]] = {
    "failed": WorkflowFailed,
    "cancelled": WorkflowCancelled,
    "step_limit": StepLimitReached,
}
