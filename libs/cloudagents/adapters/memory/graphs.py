"""Distributed graph workflows' documents in memory (the api on the memory backend)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cloudagents.graphs.documents import TaskDocument, WorkflowRunDocument, now
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep


class InMemoryWorkflowStore:
    """``ports.graphs.WorkflowStore`` over dicts, with the Firestore store's rules."""

    def __init__(self) -> None:
        self.graphs: dict[str, str] = {}
        self.runs: dict[str, WorkflowRunDocument] = {}
        self.task_docs: dict[tuple[str, str], TaskDocument] = {}
        self.checkpoint_docs: dict[str, list[Superstep]] = {}

    async def put_graph(self, graph: CompiledGraph) -> str:
        self.graphs.setdefault(graph.hash, graph.to_json())
        return graph.hash

    async def get_graph(self, digest: str) -> CompiledGraph:
        try:
            return CompiledGraph.from_json(self.graphs[digest])
        except KeyError:
            raise KeyError(f"no workflow graph {digest}") from None

    async def list_graphs(self) -> list[tuple[str, str]]:
        return sorted((h, CompiledGraph.from_json(j).name) for h, j in self.graphs.items())

    async def create_run(
        self,
        checkpoint: Superstep,
        *,
        workspace: str,
        graph_name: str,
        dispatch_seconds: float,
    ) -> WorkflowRunDocument:
        wid = checkpoint.workflow_id
        if wid in self.runs:
            raise ValueError(f"workflow {wid} already exists; run ids are not reused")
        run = WorkflowRunDocument(
            workflow_id=wid,
            workspace=workspace,
            graph_name=graph_name,
            graph_hash=checkpoint.graph_hash,
            status=checkpoint.status,
            step=checkpoint.step,
            checkpoint=checkpoint,
            dispatch_seconds=dispatch_seconds,
        )
        self.runs[wid] = run
        self.checkpoint_docs[wid] = [checkpoint]
        deadline = time.time() + dispatch_seconds
        for task in checkpoint.pending:
            self.task_docs[(wid, task.task_id)] = TaskDocument(
                workflow_id=wid, task=task, lease_expires_at=deadline
            )
        return run

    async def get_run(self, workflow_id: str) -> WorkflowRunDocument | None:
        return self.runs.get(workflow_id)

    async def list_runs(
        self, workspace: str, status: str | None = None, limit: int = 100
    ) -> list[WorkflowRunDocument]:
        found = [
            r
            for r in self.runs.values()
            if r.workspace == workspace and (status is None or r.status == status)
        ]
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    async def stop_run(
        self, workflow_id: str, stop: Callable[[Superstep], Superstep]
    ) -> WorkflowRunDocument | None:
        run = self.runs.get(workflow_id)
        if run is None or run.status != "running":
            return None
        ended = stop(run.checkpoint)
        after = run.model_copy(
            update={"status": ended.status, "checkpoint": ended, "updated_at": now()}
        )
        self.runs[workflow_id] = after
        self.checkpoint_docs[workflow_id].append(ended)
        return after

    async def tasks(self, workflow_id: str, task_ids: Iterable[str]) -> dict[str, TaskDocument]:
        return {
            t: self.task_docs[(workflow_id, t)]
            for t in task_ids
            if (workflow_id, t) in self.task_docs
        }

    async def checkpoints(self, workflow_id: str) -> list[Superstep]:
        return list(self.checkpoint_docs.get(workflow_id, []))
