"""What the api reads and writes of distributed graph workflows (``cloudagents.graphs``):
compiled graphs by hash and workflow runs. ``adapters/firestore/graphs.py`` implements it on
Firestore, ``adapters/memory/graphs.py`` in memory; workers and orchestrators
(``graphs/distributed.py``) use the Firestore store's task and lease methods besides."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from cloudagents.graphs.documents import Priority, Resumed, TaskDocument, WorkflowRunDocument
from cloudagents.graphs.events import WorkflowEvent
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep


class WorkflowStore(Protocol):
    async def put_graph(self, graph: CompiledGraph) -> str:
        """Store ``graph`` under its hash (once); return the hash."""
        ...

    async def get_graph(self, digest: str) -> CompiledGraph:
        """The graph stored under ``digest``; KeyError if none."""
        ...

    async def list_graphs(self) -> list[tuple[str, str]]:
        """(hash, name) of every stored graph."""
        ...

    async def graph_by_name(self, name: str) -> str | None:
        """The hash of the graph named ``name`` registered last; None if there is none."""
        ...

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
        """The run with its first checkpoint, tasks and ``workflow_started`` event; ValueError
        if the id is taken."""
        ...

    async def get_run(self, workflow_id: str) -> WorkflowRunDocument | None: ...

    async def list_runs(
        self, workspace: str, status: str | None = None, limit: int = 100
    ) -> list[WorkflowRunDocument]:
        """Runs of ``workspace`` (optionally of one status), newest first."""
        ...

    async def stop_run(
        self, workflow_id: str, stop: Callable[[Superstep], Superstep]
    ) -> WorkflowRunDocument | None:
        """End a running run with ``stop(checkpoint)``; None if it is not running."""
        ...

    async def resume_run(
        self,
        workflow_id: str,
        resume: Callable[[Superstep], Superstep],
        *,
        dispatch_seconds: float,
    ) -> Resumed | None:
        """Reopen a stopped run with ``resume(checkpoint)``; its open tasks without a ``done``
        result are cleared for a new dispatch (``Resumed.dispatch``). None if unknown;
        ValueError if it is running or ``resume`` refuses it."""
        ...

    async def checkpoint(self, workflow_id: str, step: int) -> Superstep | None:
        """The barrier commit that opened superstep ``step``; None if the run never got there."""
        ...

    async def events(self, workflow_id: str, after: str | None = None) -> list[WorkflowEvent]:
        """The run's events after ``after``, in id order (``graphs/events.py``)."""
        ...

    async def tasks(self, workflow_id: str, task_ids: Iterable[str]) -> dict[str, TaskDocument]:
        """The task documents that exist among ``task_ids``."""
        ...

    async def checkpoints(self, workflow_id: str) -> list[Superstep]:
        """Every barrier commit of a run, oldest first."""
        ...
