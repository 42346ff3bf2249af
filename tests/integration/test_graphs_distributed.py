"""Seed 001's distributed graph workflows on the Firestore and Pub/Sub emulators.

``DistributedOrchestrator`` and ``DistributedWorker``s run in this process (each with its own
clients, as on separate machines), coordinating only through the emulators: the graph stored by
hash, the run document and its per-task documents, node-type topics with streaming pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from cloudagents.graphs import END, Graph, NodeRegistry, Orchestrator, State, StepLimitReached
from cloudagents.graphs.distributed import DistributedOrchestrator, DistributedWorker
from cloudagents.graphs.superstep import TaskResult
from cloudagents.local.emulators import start_firestore, start_pubsub

pytestmark = pytest.mark.integration

PROJECT = "graphs-project"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Firestore and Pub/Sub only (graph workflows use nothing else), for this module."""
    logs = tmp_path_factory.mktemp("graph-emulator-logs")
    firestore = start_firestore(PROJECT, logs)
    try:
        pubsub = start_pubsub(PROJECT, logs)
    except BaseException:
        firestore.stop()
        raise
    env = {
        "FIRESTORE_EMULATOR_HOST": firestore.endpoint,
        "PUBSUB_EMULATOR_HOST": pubsub.endpoint,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    try:
        with patch.dict(os.environ, env):
            yield env
    finally:
        pubsub.stop()
        firestore.stop()


@pytest.fixture
def workspace(emulators: dict[str, str]) -> str:
    """A fresh workspace per test: its own node-type topics and subscriptions."""
    return f"g{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(*workers: DistributedWorker) -> AsyncIterator[None]:
    for worker in workers:
        await worker.start()
    try:
        yield
    finally:
        for worker in workers:
            await worker.stop()


@contextlib.asynccontextmanager
async def orchestrator_for(workspace: str, **options: Any) -> AsyncIterator[DistributedOrchestrator]:
    orchestrator = DistributedOrchestrator(project_id=PROJECT, workspace=workspace, **options)
    await orchestrator.connect()
    try:
        yield orchestrator
    finally:
        await orchestrator.close()


def research_graph() -> Graph:
    graph = Graph(name="research_workflow")
    graph.add_node("researcher")
    graph.add_node("writer")
    graph.set_entry_point("researcher")
    graph.add_edge("researcher", "writer")
    graph.set_finish_point("writer")
    graph.compile()
    return graph


async def test_two_workers_of_different_node_types_run_the_quick_start(workspace: str) -> None:
    researchers = DistributedWorker(
        worker_id="w-research", node_types={"researcher"}, workspace=workspace
    )
    writers = DistributedWorker(worker_id="w-write", node_types={"writer"}, workspace=workspace)

    @researchers.register("researcher")
    async def researcher(state: State) -> dict[str, Any]:
        return {"findings": [f"Finding about {state.get('query', '')}"], "by": ["w-research"]}

    @writers.register("writer")
    async def writer(state: State) -> dict[str, Any]:
        return {"report": f"Report with {len(state.get('findings', []))} findings"}

    async with running(researchers, writers), orchestrator_for(workspace) as orchestrator:
        result = await asyncio.wait_for(
            orchestrator.execute(research_graph(), initial_state={"query": "AI trends"}), 60
        )
        assert result.get("report") == "Report with 1 findings"
        wid = result.workflow_id
        assert wid is not None
        status = await orchestrator.get_workflow_status(wid)
        assert (status.status, status.step, status.nodes_pending) == ("completed", 2, [])
        run = await orchestrator.store.get_run(wid)
        assert run is not None
        graph = await orchestrator.store.get_graph(run.graph_hash)
        assert graph.hash == run.graph_hash == research_graph().compile().hash
        tasks = await orchestrator.store.tasks(wid, ["0000-researcher", "0001-writer"])
        assert {t: d.finished_by for t, d in tasks.items()} == {
            "0000-researcher": "w-research",
            "0001-writer": "w-write",
        }
        checkpoints = await orchestrator.get_checkpoints(wid)
        assert [c.step for c in checkpoints] == [0, 1, 2]
        assert [w.worker_id for w in await orchestrator.list_workers()] == ["w-research", "w-write"]
        listed = await orchestrator.list_workflows(status="completed")
        assert [s.workflow_id for s in listed] == [wid]
    workers = {w.worker_id: w for w in await _workers(workspace)}
    assert workers["w-write"].status == "stopped"
    assert workers["w-research"].node_types == ["researcher"]


async def _workers(workspace: str) -> list[Any]:
    async with orchestrator_for(workspace) as orchestrator:
        return await orchestrator.list_workers()
