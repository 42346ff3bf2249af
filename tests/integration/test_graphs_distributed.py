"""Seed 001's distributed graph workflows on the Firestore and Pub/Sub emulators.

``DistributedOrchestrator`` and ``DistributedWorker``s run in this process (each with its own
clients, as on separate machines), coordinating only through the emulators: the graph stored by
hash, the run document and its per-task documents, node-type topics with streaming pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from cloudagents.graphs import (
    END,
    Graph,
    NodeRegistry,
    Orchestrator,
    State,
    StepLimitReached,
    WorkflowCancelled,
    WorkflowFailed,
)
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
async def orchestrator_for(
    workspace: str, **options: Any
) -> AsyncIterator[DistributedOrchestrator]:
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


# A fan-out of 4 with a join, inside a conditional loop: plan -> a, b, c, d -> join -> review,
# and review routes back to plan until two rounds are done.
BRANCHES = ("a", "b", "c", "d")


def review_route(state: State) -> str:
    return "again" if state["rounds"] < 2 else "done"


def loop_graph(route: Any = review_route) -> Graph:
    graph = Graph(name="fan_out_join_loop", reducers={"parts": "extend", "count": "add"})
    for name in ("plan", *BRANCHES, "join", "review"):
        graph.add_node(name)
    graph.set_entry_point("plan")
    for name in BRANCHES:
        graph.add_edge("plan", name)
        graph.add_edge(name, "join")
    graph.add_edge("join", "review")
    graph.add_conditional_edge("review", route, {"again": "plan", "done": END})
    graph.compile()
    return graph


class Counter:
    """How often each node function ran, per (workflow, step, node): the side effect."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str | None, int, str], int] = {}

    def hit(self, state: State, node: str) -> None:
        key = (state.workflow_id, state.step, node)
        self.runs[key] = self.runs.get(key, 0) + 1


def loop_functions(counter: Counter) -> dict[str, Any]:
    async def plan(state: State) -> dict[str, Any]:
        counter.hit(state, "plan")
        return {"rounds": state.get("rounds", 0) + 1}

    def branch(name: str) -> Any:
        async def run(state: State) -> dict[str, Any]:
            counter.hit(state, name)
            return {"parts": [f"{name}{state['rounds']}"], "count": 1}

        return run

    async def join(state: State) -> dict[str, Any]:
        counter.hit(state, "join")
        joined = state["parts"][-4:]
        return {"joined": [*state.get("joined", []), ",".join(joined)]}

    async def review(state: State) -> dict[str, Any]:
        counter.hit(state, "review")
        return {"reviews": state.get("reviews", 0) + 1}

    return {"plan": plan, "join": join, "review": review, **{n: branch(n) for n in BRANCHES}}


def loop_workers(workspace: str, counter: Counter, **options: Any) -> list[DistributedWorker]:
    functions = loop_functions(counter)
    coordinator = DistributedWorker(
        worker_id=f"{workspace}-coordinator",
        node_types={"plan", "join", "review"},
        workspace=workspace,
        **options,
    )
    branches = DistributedWorker(
        worker_id=f"{workspace}-branches",
        node_types=set(BRANCHES),
        capacity=4,
        workspace=workspace,
        **options,
    )
    for worker in (coordinator, branches):
        for name in worker.node_types:
            worker.register_node(name, functions[name])
    coordinator.register_router("review_route")(review_route)
    return [coordinator, branches]


async def in_process_state(graph: Graph, counter: Counter) -> dict[str, Any]:
    registry = NodeRegistry()
    for name, func in loop_functions(counter).items():
        registry.register_node(name, func)
    result = await Orchestrator(registry=registry).execute(graph, initial_state={"topic": "x"})
    return dict(result)


async def test_fan_out_join_and_loop_equal_the_in_process_run(workspace: str) -> None:
    counter = Counter()
    async with running(*loop_workers(workspace, counter)), orchestrator_for(workspace) as orch:
        result = await asyncio.wait_for(
            orch.execute(loop_graph(), initial_state={"topic": "x"}, workflow_id="loop-1"), 90
        )
    expected = await in_process_state(loop_graph(), Counter())
    assert dict(result) == expected
    assert result["joined"] == ["a1,b1,c1,d1", "a2,b2,c2,d2"]
    assert result["count"] == 8
    # Each node ran once per superstep it was planned in; the join fired once per round.
    assert set(counter.runs.values()) == {1}
    assert sorted(s for (_, s, n) in counter.runs if n == "join") == [2, 6]
    assert result.step == 8


async def test_every_task_delivered_twice_runs_once_and_applies_once(workspace: str) -> None:
    counter = Counter()
    async with (
        running(*loop_workers(workspace, counter)),
        orchestrator_for(workspace, copies=2) as orch,
    ):
        result = await asyncio.wait_for(
            orch.execute(loop_graph(), initial_state={"topic": "x"}, workflow_id="dup-1"), 90
        )
        checkpoints = await orch.get_checkpoints("dup-1")
    assert dict(result) == await in_process_state(loop_graph(), Counter())
    assert set(counter.runs.values()) == {1}, counter.runs
    assert [c.step for c in checkpoints] == list(range(9))


async def test_a_result_saved_twice_is_applied_once(workspace: str) -> None:
    graph = Graph(name="single")
    graph.add_node("only")
    graph.set_entry_point("only")
    graph.set_finish_point("only")
    async with orchestrator_for(workspace) as orch:
        wid = await orch.start(graph, {"x": 0})
        first = TaskResult(task_id="0000-only", node="only", status="done", update={"x": 1})
        second = first.model_copy(update={"update": {"x": 2}})
        assert await orch.store.save_result(wid, first, "one") is True
        assert await orch.store.save_result(wid, second, "two") is False
        result = await asyncio.wait_for(orch.wait(wid), 30)
        assert result["x"] == 1
        # A second advance of the same superstep (a duplicate trigger) changes nothing.
        assert await orch._c.advance(wid, 0) is None
        assert [c.step for c in await orch.get_checkpoints(wid)] == [0, 1]
        task = await orch.store.get_task(wid, "0000-only")
        assert task is not None and task.finished_by == "one"


async def test_a_worker_stopped_mid_task_loses_its_lease_and_another_finishes(
    workspace: str,
) -> None:
    graph = Graph(name="slow")
    graph.add_node("slow")
    graph.set_entry_point("slow")
    graph.set_finish_point("slow")
    started = asyncio.Event()
    ran: list[str] = []
    first = DistributedWorker(
        worker_id="w-first", node_types={"slow"}, heartbeat_interval=0.3, workspace=workspace
    )
    second = DistributedWorker(
        worker_id="w-second", node_types={"slow"}, heartbeat_interval=0.3, workspace=workspace
    )

    @first.register("slow")
    async def hang(state: State) -> dict[str, Any]:
        ran.append("w-first")
        started.set()
        await asyncio.Event().wait()  # never returns: the machine dies first
        return {}

    @second.register("slow")
    async def finish(state: State) -> dict[str, Any]:
        ran.append("w-second")
        return {"done_by": "w-second"}

    async with orchestrator_for(workspace, dispatch_timeout=1.0, poll_interval=0.1) as orch:
        await first.start()
        wid = await orch.start(graph, {})
        waiting = asyncio.create_task(orch.wait(wid))
        await asyncio.wait_for(started.wait(), 30)
        task = await orch.store.get_task(wid, "0000-slow")
        assert task is not None and task.lease_owner == "w-first"
        await first.stop(graceful=False)
        async with running(second):
            result = await asyncio.wait_for(waiting, 60)
        task = await orch.store.get_task(wid, "0000-slow")
    assert result["done_by"] == "w-second"
    assert ran == ["w-first", "w-second"]
    assert task is not None
    assert (task.finished_by, task.lease_owner, task.claims) == ("w-second", "w-second", 2)


async def test_a_worker_re_dispatches_on_the_run_s_dispatch_timeout_not_its_own(
    workspace: str,
) -> None:
    # A worker sweeping with its default dispatch timeout (30 s) used to set the next
    # re-dispatch of a run started with 1 s 30 s out: the hand-over tests then saw a handful of
    # re-dispatches a minute, each of which the emulator may route to a dead worker's stream.
    graph = Graph(name="unclaimed")
    graph.add_node("slow")
    graph.set_entry_point("slow")
    graph.set_finish_point("slow")
    sweeper = DistributedWorker(worker_id="w-tends", node_types={"slow"}, workspace=workspace)
    async with orchestrator_for(workspace, dispatch_timeout=0.0) as orch:
        wid = await orch.start(graph, {})  # no worker pulls: every dispatch expires at once
        await sweeper._c.connect()
        try:
            for _ in range(2):
                run = await orch.store.get_run(wid)
                assert run is not None
                await sweeper._c.tend(run)
        finally:
            await sweeper._c.close()
        task = await orch.store.get_task(wid, "0000-slow")
    assert task is not None and task.dispatches == 3  # both tends found the lease expired


async def test_a_loop_that_never_ends_stops_at_the_step_limit(workspace: str) -> None:
    def always_again(state: State) -> str:
        return "again"

    counter = Counter()
    workers = loop_workers(workspace, counter)
    graph = loop_graph(always_again)
    workers[0].register_graph(graph)  # its inline router
    async with running(*workers), orchestrator_for(workspace, max_steps=6) as orch:
        with pytest.raises(StepLimitReached) as raised:
            await asyncio.wait_for(orch.execute(graph, {"topic": "x"}), 60)
        wid = raised.value.workflow_id
        status = await orch.get_workflow_status(wid)
    assert raised.value.checkpoint.step == 6
    assert (status.status, status.step) == ("step_limit", 6)
    assert [t.node for t in raised.value.checkpoint.pending] == ["join"]
    assert raised.value.checkpoint.state["rounds"] == 2


async def test_a_worker_without_the_router_fails_the_run_naming_it(workspace: str) -> None:
    counter = Counter()
    workers = loop_workers(workspace, counter)
    workers[0]._routers.clear()  # as if the router were never registered on that machine
    async with running(*workers), orchestrator_for(workspace) as orch:
        with pytest.raises(WorkflowFailed, match="no router 'review_route' for node 'review'"):
            await asyncio.wait_for(orch.execute(loop_graph(), {"topic": "x"}), 60)
        [run] = await orch.list_workflows(status="failed")
        checkpoints = await orch.get_checkpoints(run.workflow_id)
    # The open checkpoint of superstep 3 is kept beside the failed one, not overwritten.
    assert [(c.step, c.status) for c in checkpoints][-2:] == [(3, "running"), (3, "failed")]


async def test_cancel_ends_the_run_at_its_last_barrier(workspace: str) -> None:
    started = asyncio.Event()
    worker = DistributedWorker(worker_id="w-hang", node_types={"slow"}, workspace=workspace)

    @worker.register("slow")
    async def hang(state: State) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    graph = Graph(name="cancel_me")
    graph.add_node("slow")
    graph.set_entry_point("slow")
    graph.set_finish_point("slow")
    await worker.start()
    try:
        async with orchestrator_for(workspace) as orch:
            wid = await orch.start(graph, {"k": 1})
            await asyncio.wait_for(started.wait(), 30)
            assert [s.status for s in await orch.list_workflows(status="running")] == ["running"]
            assert await orch.cancel_workflow(wid) is True
            assert await orch.cancel_workflow(wid) is False
            with pytest.raises(WorkflowCancelled) as raised:
                await asyncio.wait_for(orch.wait(wid), 30)
            status = await orch.get_workflow_status(wid)
    finally:
        await worker.stop(graceful=False)
    assert raised.value.checkpoint.state == {"k": 1}
    assert [t.node for t in raised.value.checkpoint.pending] == ["slow"]
    assert (status.status, status.step, status.nodes_pending) == ("cancelled", 0, ["slow"])


EXAMPLE = ROOT / "examples" / "workflows" / "distributed_workflow.py"


def _example_env(workspace: str) -> dict[str, str]:
    return {**os.environ, "CLOUDAGENTS_WORKSPACE": workspace, "GOOGLE_CLOUD_PROJECT": PROJECT}


def test_the_distributed_example_runs_in_one_process(workspace: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=_example_env(workspace),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Report with 1 findings"
    assert lines[1].startswith("status=completed supersteps=2 graph=")
    assert lines[2:] == [
        "worker worker-researcher serves researcher",
        "worker worker-writer serves writer",
    ]


def test_the_distributed_example_runs_one_role_per_process(workspace: str) -> None:
    env = _example_env(workspace)
    workers = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLE), "worker", node_type],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node_type in ("researcher", "writer")
    ]
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "orchestrator"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "Report with 1 findings"
        assert all(w.poll() is None for w in workers)  # still serving
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate(timeout=30)


async def test_without_a_waiting_orchestrator_the_workers_sweep_re_dispatches(
    workspace: str,
) -> None:
    graph = Graph(name="swept")
    graph.add_node("slow")
    graph.set_entry_point("slow")
    graph.set_finish_point("slow")
    started = asyncio.Event()
    first = DistributedWorker(
        worker_id="w-dies", node_types={"slow"}, heartbeat_interval=0.3, workspace=workspace
    )
    second = DistributedWorker(  # its own dispatch timeout is the default 30 s: the run's is used
        worker_id="w-sweeps", node_types={"slow"}, heartbeat_interval=0.3, workspace=workspace
    )

    @first.register("slow")
    async def hang(state: State) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()
        return {}

    @second.register("slow")
    async def finish(state: State) -> dict[str, Any]:
        return {"done_by": "w-sweeps"}

    await first.start()
    async with orchestrator_for(workspace, dispatch_timeout=1.0) as orch:
        wid = await orch.start(graph, {})  # and nobody waits on it
    await asyncio.wait_for(started.wait(), 30)
    await first.stop(graceful=False)
    async with running(second), orchestrator_for(workspace) as orch:
        async with asyncio.timeout(60):
            while (run := await orch.store.get_run(wid)) is None or run.status == "running":
                await asyncio.sleep(0.1)
        task = await orch.store.get_task(wid, "0000-slow")
    assert run.status == "completed" and run.checkpoint.state == {"done_by": "w-sweeps"}
    assert task is not None and task.dispatches >= 2 and task.finished_by == "w-sweeps"


async def test_a_worker_process_killed_mid_task_is_replaced_by_another(workspace: str) -> None:
    graph = Graph(name="killed")
    graph.add_node("slow")
    graph.set_entry_point("slow")
    graph.set_finish_point("slow")
    env = {**_example_env(workspace), "CLOUDAGENTS_WORKSPACE": workspace}

    def spawn(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.graph_worker_process", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def line(process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        return (await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)).strip()

    doomed = spawn("w-killed", "hang")
    survivor: subprocess.Popen[str] | None = None
    try:
        assert await line(doomed) == "ready"
        async with orchestrator_for(workspace, dispatch_timeout=1.0, poll_interval=0.1) as orch:
            wid = await orch.start(graph, {})
            waiting = asyncio.create_task(orch.wait(wid))
            assert await line(doomed) == "started"
            doomed.kill()  # SIGKILL: no clean-up, the lease simply stops being renewed
            doomed.wait(timeout=30)
            survivor = spawn("w-survivor")
            result = await asyncio.wait_for(waiting, 60)
            task = await orch.store.get_task(wid, "0000-slow")
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.communicate(timeout=30)
    assert result["done_by"] == "w-survivor"
    assert task is not None
    assert (task.finished_by, task.claims) == ("w-survivor", 2)
    assert task.dispatches >= 2
