"""What the api reads and writes of distributed graph workflows (``cloudagents.graphs``):
compiled graphs by hash and workflow runs. ``adapters/firestore/graphs.py`` implements it on
Firestore, ``adapters/memory/graphs.py`` in memory; workers and orchestrators
(``graphs/distributed.py``) use the Firestore store's task and lease methods besides."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from cloudagents.graphs.documents import TaskDocument, WorkflowRunDocument
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

    async def create_run(
        self,
        checkpoint: Superstep,
        *,
        workspace: str,
        graph_name: str,
        dispatch_seconds: float,
    ) -> WorkflowRunDocument:
        """The run with its first checkpoint and tasks; ValueError if the id is taken."""
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

    async def tasks(self, workflow_id: str, task_ids: Iterable[str]) -> dict[str, TaskDocument]:
        """The task documents that exist among ``task_ids``."""
        ...

    async def checkpoints(self, workflow_id: str) -> list[Superstep]:
        """Every barrier commit of a run, oldest first."""
        ...
