"""Fork, resume, events and priority bands of distributed workflow runs, on the Firestore and
Pub/Sub emulators (``DistributedOrchestrator`` and ``DistributedWorker``s in this process)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from cloudagents.graphs import Graph, State, StepLimitReached, WorkflowFailed
from cloudagents.graphs.distributed import DistributedWorker
from cloudagents.graphs.runs import UnknownWorkflow, WorkflowConflict
from tests.integration import test_graphs_distributed as base
from tests.integration.test_graphs_distributed import PROJECT, orchestrator_for, running

pytestmark = pytest.mark.integration
emulators = base.emulators  # the same fixtures: Firestore and Pub/Sub, a workspace per test
workspace = base.workspace


def chain() -> Graph:
    graph = Graph(name="chain")
    for node in ("a", "b", "c"):
        graph.add_node(node, node_type="step")
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.set_finish_point("c")
    return graph


def chain_worker(workspace: str, runs: Counter[str], fail: dict[str, bool]) -> DistributedWorker:
    worker = DistributedWorker(
        worker_id="chain", node_types={"step"}, capacity=2, project_id=PROJECT, workspace=workspace
    )

    @worker.register("step")
    async def step(state: State) -> dict[str, Any]:
        done = list(state.get("done", []))
        node = "abc"[len(done)]
        runs[f"{state.workflow_id}/{node}"] += 1
        if node == "c" and fail.get("c"):
            raise RuntimeError("c is broken")
        return {"done": [*done, node], "total": state.get("total", 0) + state.get("x", 1)}

    return worker


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.05)


async def test_resume_a_failed_run_then_fork_it_from_a_step(workspace: str) -> None:
    runs: Counter[str] = Counter()
    fail = {"c": True}
    async with (
        orchestrator_for(workspace) as orchestrator,
        running(chain_worker(workspace, runs, fail)),
        asyncio.timeout(60),
    ):
        with pytest.raises(WorkflowFailed, match="c is broken"):
            await orchestrator.execute(chain(), {}, workflow_id="src")
        with pytest.raises(WorkflowConflict, match="running"):
            await orchestrator.resume_workflow(await orchestrator.start(chain(), {}))
        fail["c"] = False
        await orchestrator.resume_workflow("src")
        final = await orchestrator.wait("src")
        assert final.to_dict()["data"] == {"done": ["a", "b", "c"], "total": 3}
        # Only the failed node ran again; a and b's results were kept.
        assert (runs["src/a"], runs["src/b"], runs["src/c"]) == (1, 1, 2)
        with pytest.raises(WorkflowConflict, match="cannot resume"):
            await orchestrator.resume_workflow("src")  # completed

        fork = await orchestrator.fork_workflow("src", 1, {"x": 10}, new_workflow_id="fork")
        forked = await orchestrator.wait(fork)
        # b and c ran on step 1's state (a's update) with x written over it.
        assert forked.to_dict()["data"] == {"done": ["a", "b", "c"], "total": 21, "x": 10}
        assert (runs["fork/a"], runs["fork/b"], runs["fork/c"]) == (0, 1, 1)
        run = await orchestrator.store.get_run("fork")
        assert run is not None and run.forked_from == "src@1"
        assert run.graph_hash == (await orchestrator.store.get_run("src")).graph_hash  # type: ignore[union-attr]
        with pytest.raises(UnknownWorkflow, match="no checkpoint at step 9"):
            await orchestrator.fork_workflow("src", 9)
        with pytest.raises(UnknownWorkflow):
            await orchestrator.fork_workflow("nobody", 0)
        with pytest.raises(WorkflowConflict, match="nothing to fork"):
            await orchestrator.fork_workflow("src", 3)  # completed there: nothing pending

    events = await orchestrator_events(workspace, "src")
    kinds = [(e.type, getattr(e, "node", None) or getattr(e, "status", None)) for e in events]
    assert kinds == [
        ("workflow_started", None),
        ("node_started", "a"),
        ("node_finished", "a"),
        ("superstep_committed", "running"),
        ("node_started", "b"),
        ("node_finished", "b"),
        ("superstep_committed", "running"),
        ("node_started", "c"),
        ("node_failed", "c"),
        ("workflow_ended", "failed"),
        ("workflow_resumed", None),
        ("node_started", "c"),
        ("node_finished", "c"),
        ("superstep_committed", "completed"),
        ("workflow_ended", "completed"),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)


async def orchestrator_events(workspace: str, workflow_id: str) -> list[Any]:
    async with orchestrator_for(workspace) as orchestrator:
        return await orchestrator.store.events(workflow_id)


async def test_a_run_at_its_step_limit_resumes_with_a_higher_limit(workspace: str) -> None:
    runs: Counter[str] = Counter()
    async with (
        orchestrator_for(workspace, max_steps=2) as orchestrator,
        running(chain_worker(workspace, runs, {})),
        asyncio.timeout(60),
    ):
        with pytest.raises(StepLimitReached):
            await orchestrator.execute(chain(), {}, workflow_id="limited")
        with pytest.raises(WorkflowConflict, match="raise max_steps above 2"):
            await orchestrator.resume_workflow("limited")
        await orchestrator.resume_workflow("limited", max_steps=5)
        final = await orchestrator.wait("limited")
    assert final.to_dict()["data"]["done"] == ["a", "b", "c"]
    assert sum(runs.values()) == 3


async def test_with_a_backlog_high_band_tasks_run_before_low_band_ones(workspace: str) -> None:
    graph = Graph(name="job")
    graph.add_node("job")
    graph.set_entry_point("job")
    graph.set_finish_point("job")
    release = asyncio.Event()
    order: list[str] = []
    worker = DistributedWorker(
        worker_id="banded",
        node_types={"job"},
        capacity=1,
        prefetch=4,
        project_id=PROJECT,
        workspace=workspace,
    )

    @worker.register("job")
    async def job(state: State) -> dict[str, Any]:
        if state.get("block"):
            await release.wait()
        order.append(state["name"])
        return {"ran": True}

    async with (
        orchestrator_for(workspace) as orchestrator,
        running(worker),
        asyncio.timeout(60),
    ):
        blocker = await orchestrator.start(graph, {"name": "blocker", "block": True})
        await until(lambda: worker.active == 1)  # the one slot is taken
        started = []
        for n in range(4):  # low ones published first
            started.append(await orchestrator.start(graph, {"name": f"low{n}"}, priority="low"))
        for n in range(4):
            started.append(await orchestrator.start(graph, {"name": f"high{n}"}, priority="high"))
        await until(lambda: worker.waiting == 8)  # the backlog is held, waiting for the slot
        release.set()
        for wid in [blocker, *started]:
            await orchestrator.wait(wid)
    assert order[0] == "blocker"
    assert sorted(order[1:5]) == [f"high{n}" for n in range(4)], order
    assert sorted(order[5:]) == [f"low{n}" for n in range(4)], order
