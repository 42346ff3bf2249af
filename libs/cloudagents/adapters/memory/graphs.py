"""Distributed graph workflows' documents in memory (the api on the memory backend)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cloudagents.graphs.documents import (
    Priority,
    Resumed,
    TaskDocument,
    WorkflowRunDocument,
    new_run_document,
    now,
    open_task_documents,
    reopened_task,
    resumed_event,
    started_event,
    transition_events,
)
from cloudagents.graphs.events import WorkflowEvent
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep


class InMemoryWorkflowStore:
    """``ports.graphs.WorkflowStore`` over dicts, with the Firestore store's rules."""

    def __init__(self) -> None:
        self.graphs: dict[str, str] = {}
        self.runs: dict[str, WorkflowRunDocument] = {}
        self.task_docs: dict[tuple[str, str], TaskDocument] = {}
        self.checkpoint_docs: dict[str, list[Superstep]] = {}
        self.opened: dict[str, dict[int, Superstep]] = {}
        self.event_docs: dict[str, dict[str, WorkflowEvent]] = {}

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

    async def graph_by_name(self, name: str) -> str | None:
        named = [h for h, j in self.graphs.items() if CompiledGraph.from_json(j).name == name]
        return named[-1] if named else None  # dicts keep insertion order: the last registered

    def _event(self, event: WorkflowEvent) -> None:
        self.event_docs.setdefault(event.workflow_id, {})[event.id] = event

    async def create_run(
        self,
        checkpoint: Superstep,
        *,
        workspace: str,
        graph_name: str,
        dispatch_seconds: float,
        priority: Priority = "normal",
        forked_from: str | None = None,
    ) -> WorkflowRunDocument:
        wid = checkpoint.workflow_id
        if wid in self.runs:
            raise ValueError(f"workflow {wid} already exists; run ids are not reused")
        run = new_run_document(
            checkpoint,
            workspace=workspace,
            graph_name=graph_name,
            dispatch_seconds=dispatch_seconds,
            priority=priority,
            forked_from=forked_from,
        )
        self.runs[wid] = run
        self.checkpoint_docs[wid] = [checkpoint]
        self.opened[wid] = {checkpoint.step: checkpoint}
        for doc in open_task_documents(checkpoint, dispatch_seconds):
            self.task_docs[(wid, doc.task.task_id)] = doc
        self._event(started_event(run))
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
        for event in transition_events(run, ended):
            self._event(event)
        return after

    async def resume_run(
        self,
        workflow_id: str,
        resume: Callable[[Superstep], Superstep],
        *,
        dispatch_seconds: float,
    ) -> Resumed | None:
        run = self.runs.get(workflow_id)
        if run is None:
            return None
        if run.status == "running":
            raise ValueError(f"workflow {workflow_id} is running; only a stopped run resumes")
        again = resume(run.checkpoint)
        after = run.model_copy(
            update={
                "status": again.status,
                "checkpoint": again,
                "resumes": run.resumes + 1,
                "updated_at": now(),
            }
        )
        lease = dispatch_seconds if run.dispatch_seconds is None else run.dispatch_seconds
        dispatch = []
        for task in again.pending:
            key = (workflow_id, task.task_id)
            doc = self.task_docs.get(key)
            if doc is None:
                [fresh] = open_task_documents(
                    again.model_copy(update={"pending": [task]}), lease, after.resumes
                )
                self.task_docs[key] = fresh
                dispatch.append(task)
                continue
            reopened = reopened_task(doc, lease, after.resumes)
            if reopened is not None:
                self.task_docs[key] = reopened
                dispatch.append(task)
        self.runs[workflow_id] = after
        self.checkpoint_docs[workflow_id].append(again)
        self._event(resumed_event(run, after))
        return Resumed(run=after, dispatch=dispatch)

    async def tasks(self, workflow_id: str, task_ids: Iterable[str]) -> dict[str, TaskDocument]:
        return {
            t: self.task_docs[(workflow_id, t)]
            for t in task_ids
            if (workflow_id, t) in self.task_docs
        }

    async def checkpoints(self, workflow_id: str) -> list[Superstep]:
        return list(self.checkpoint_docs.get(workflow_id, []))

    async def checkpoint(self, workflow_id: str, step: int) -> Superstep | None:
        return self.opened.get(workflow_id, {}).get(step)

    async def events(self, workflow_id: str, after: str | None = None) -> list[WorkflowEvent]:
        found = self.event_docs.get(workflow_id, {})
        return [found[i] for i in sorted(found) if after is None or i > after]
