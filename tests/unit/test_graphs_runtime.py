"""The Orchestrator and Worker: routing loops, retries, timeouts, cancel, status, capacity."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudagents.graphs import (
    END,
    Graph,
    GraphError,
    NodeRegistry,
    Orchestrator,
    RetryPolicy,
    State,
    StepLimitReached,
    Worker,
    WorkerStopped,
    WorkflowCancelled,
    WorkflowFailed,
)


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def single(func: Any, **options: Any) -> Graph:
    graph = Graph("single")
    graph.add_node("only", func, **options)
    graph.set_entry_point("only")
    graph.set_finish_point("only")
    return graph


def review_loop(approve_at: int) -> tuple[Graph, NodeRegistry]:
    registry = NodeRegistry()

    @registry.register("writer")
    async def writer(state: State) -> dict[str, Any]:
        draft = state.get("draft", 0) + 1
        return {"draft": draft, "history": [f"draft {draft}"]}

    @registry.register("reviewer")
    async def reviewer(state: State) -> dict[str, Any]:
        return {"decision": "approve" if state["draft"] >= approve_at else "revise"}

    @registry.register("publisher")
    async def publisher(state: State) -> dict[str, Any]:
        return {"report": f"published draft {state['draft']}"}

    def route_after_review(state: State) -> str:
        return str(state.get("decision", "revise"))

    graph = Graph("review", reducers={"history": "extend"})
    graph.add_node("writer")
    graph.add_node("reviewer")
    graph.add_node("publisher")
    graph.set_entry_point("writer")
    graph.add_edge("writer", "reviewer")
    graph.add_conditional_edge(
        "reviewer", route_after_review, {"approve": "publisher", "revise": "writer"}
    )
    graph.set_finish_point("publisher")
    return graph, registry


# --- routing loops --------------------------------------------------------------------------


async def test_review_loop_converges() -> None:
    graph, registry = review_loop(approve_at=3)
    orchestrator = Orchestrator(registry)
    result = await orchestrator.execute(graph, {}, workflow_id="loop")
    assert result["report"] == "published draft 3"
    assert result["history"] == ["draft 1", "draft 2", "draft 3"]
    checkpoints = orchestrator.get_checkpoints("loop")
    assert len(checkpoints) == 7 == result.step  # w r w r w r p
    assert [cp.model_dump()["routes"] for cp in checkpoints if cp.routes] == [
        {"reviewer": {"key": k, "target": t}}
        for k, t in [("revise", "writer")] * 2 + [("approve", "publisher")]
    ]


async def test_review_loop_hits_the_step_limit_and_resumes() -> None:
    graph, registry = review_loop(approve_at=10)
    orchestrator = Orchestrator(registry, max_steps=6)
    with pytest.raises(StepLimitReached) as caught:
        await orchestrator.execute(graph, {}, workflow_id="long")
    checkpoint = caught.value.checkpoint
    assert caught.value.status == "step_limit" and checkpoint.step == 6
    assert [t.task_id for t in checkpoint.pending] == ["0006-writer"] and checkpoint.state[
        "draft"
    ] == 3
    status = orchestrator.get_workflow_status("long")
    assert status.status == "step_limit" and status.nodes_pending == ["writer"]
    with pytest.raises(StepLimitReached):
        await orchestrator.resume(graph, checkpoint, max_steps=2)
    result = await Orchestrator(registry, max_steps=50).resume(graph, checkpoint)
    assert result["report"] == "published draft 10"


async def test_router_returning_an_unknown_key_fails_without_retry() -> None:
    graph = Graph("g")
    graph.add_node("a", lambda s: {"x": 1}, retry=RetryPolicy(max_attempts=3))
    graph.set_entry_point("a")
    graph.add_conditional_edge("a", lambda s: "sideways", {"up": END})
    with pytest.raises(
        WorkflowFailed, match=r"node 'a' failed after 1 attempt\(s\): GraphError: router"
    ):
        await Orchestrator().execute(graph, {})


# --- retries and timeouts --------------------------------------------------------------------


async def test_node_failing_twice_then_succeeding() -> None:
    calls = {"n": 0}

    async def flaky(state: State) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("down")
        return {"ok": calls["n"]}

    sleeps = Sleeps()
    policy = RetryPolicy(
        max_attempts=3, backoff_seconds=0.5, backoff_multiplier=2, retry_on=("ConnectionError",)
    )
    result = await Orchestrator(sleep=sleeps).execute(single(flaky, retry=policy), {})
    assert result["ok"] == 3 and sleeps.delays == [0.5, 1.0]


async def test_node_that_keeps_failing_fails_the_workflow() -> None:
    calls = {"n": 0}

    def broken(state: State) -> None:
        calls["n"] += 1
        raise ConnectionError("still down")

    orchestrator = Orchestrator(sleep=Sleeps())
    with pytest.raises(
        WorkflowFailed,
        match=r"node 'only' failed after 3 attempt\(s\): ConnectionError: still down",
    ) as caught:
        await orchestrator.execute(
            single(broken, retry=RetryPolicy(max_attempts=3)), {}, workflow_id="bad"
        )
    assert calls["n"] == 3 and caught.value.status == "failed"
    assert orchestrator.get_workflow_status("bad").status == "failed"


async def test_exceptions_not_listed_are_not_retried() -> None:
    calls = {"n": 0}

    def broken(state: State) -> None:
        calls["n"] += 1
        raise KeyError("nope")

    policy = RetryPolicy(max_attempts=5, retry_on=("ConnectionError",))
    with pytest.raises(WorkflowFailed, match=r"after 1 attempt\(s\): KeyError"):
        await Orchestrator(sleep=Sleeps()).execute(single(broken, retry=policy), {})
    assert calls["n"] == 1


async def test_timeout_counts_as_a_retryable_failure() -> None:
    calls = {"n": 0}
    never = asyncio.Event()

    async def slow_once(state: State) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            await never.wait()
        return {"done": True}

    graph = single(
        slow_once,
        timeout_seconds=0.02,
        retry=RetryPolicy(max_attempts=2, retry_on=("TimeoutError",)),
    )
    sleeps = Sleeps()
    result = await Orchestrator(sleep=sleeps).execute(graph, {})
    assert result["done"] is True and calls["n"] == 2 and sleeps.delays == [0.5]


async def test_timeout_after_the_last_attempt_fails() -> None:
    never = asyncio.Event()

    async def hangs(state: State) -> None:
        await never.wait()

    with pytest.raises(
        WorkflowFailed, match=r"failed after 1 attempt\(s\): timed out after 0.02 s"
    ):
        await Orchestrator().execute(single(hangs, timeout_seconds=0.02), {})


async def test_node_returning_a_non_dict_fails() -> None:
    with pytest.raises(WorkflowFailed, match="node 'only' returned int; expected a dict"):
        await Orchestrator().execute(single(lambda s: 42), {})


async def test_node_mutating_its_state_changes_nothing() -> None:
    def mutate(state: State) -> dict[str, Any]:
        state["items"].append("sneaky")
        return {"seen": len(state["items"])}

    result = await Orchestrator().execute(single(mutate), {"items": [1]})
    assert result["items"] == [1] and result["seen"] == 2


# --- cancel, status, list ----------------------------------------------------------------------


async def test_cancel_stops_at_the_next_superstep_boundary() -> None:
    orchestrator = Orchestrator()
    ticks: list[int] = []

    def tick(state: State) -> dict[str, Any]:
        ticks.append(state.step)
        if len(ticks) == 3:
            assert orchestrator.cancel_workflow("spin") is True
        return {"n": len(ticks)}

    graph = Graph("spin")
    graph.add_node("tick", tick)
    graph.set_entry_point("tick")
    graph.add_conditional_edge("tick", lambda s: "again", {"again": "tick", "stop": END})
    with pytest.raises(WorkflowCancelled) as caught:
        await orchestrator.execute(graph, {}, workflow_id="spin")
    assert ticks == [0, 1, 2]  # the superstep that asked to cancel still finished
    assert caught.value.checkpoint.state == {"n": 3}
    status = orchestrator.get_workflow_status("spin")
    assert (status.status, status.step, status.nodes_pending) == ("cancelled", 3, ["tick"])
    assert orchestrator.cancel_workflow("spin") is False
    assert orchestrator.cancel_workflow("nobody") is False


async def test_status_while_running_and_list() -> None:
    orchestrator = Orchestrator()
    seen: dict[str, Any] = {}

    async def fast(state: State) -> dict[str, Any]:
        return {"fast": True}

    async def slow(state: State) -> dict[str, Any]:
        for _ in range(100):  # let the sibling finish; bounded, so a bug cannot hang the test
            if orchestrator.get_workflow_status("wf").nodes_done:
                break
            await asyncio.sleep(0)
        seen["status"] = orchestrator.get_workflow_status("wf")
        seen["running"] = orchestrator.list_workflows(status="running")
        return {"slow": True}

    graph = Graph("two")
    graph.add_node("start", lambda s: None)
    graph.add_node("fast", fast)
    graph.add_node("slow", slow)
    graph.set_entry_point("start")
    for n in ("fast", "slow"):
        graph.add_edge("start", n)
        graph.set_finish_point(n)
    await orchestrator.execute(graph, {}, workflow_id="wf")
    status = seen["status"]
    assert (status.status, status.step, status.nodes_done, status.nodes_pending) == (
        "running",
        1,
        ["fast"],
        ["slow"],
    )
    assert [s.workflow_id for s in seen["running"]] == ["wf"]
    await orchestrator.execute(graph, State("second"))
    assert [(s.workflow_id, s.status) for s in orchestrator.list_workflows()] == [
        ("wf", "completed"),
        ("second", "completed"),
    ]
    assert orchestrator.list_workflows(status="running") == []
    with pytest.raises(KeyError, match="unknown workflow"):
        orchestrator.get_workflow_status("missing")


async def test_a_running_workflow_id_cannot_start_twice() -> None:
    orchestrator = Orchestrator()
    release = asyncio.Event()

    async def wait(state: State) -> None:
        await release.wait()

    run = asyncio.create_task(orchestrator.execute(single(wait), {}, workflow_id="dup"))
    for _ in range(10):
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="already running"):
        await orchestrator.execute(single(wait), {}, workflow_id="dup")
    release.set()
    await run


# --- workers ---------------------------------------------------------------------------------


def wide(width: int, node_type: str = "search") -> Graph:
    graph = Graph("wide", reducers={"hits": "extend"})
    graph.add_node("plan", node_type="planner")
    graph.add_node("merge", node_type="planner")
    graph.set_entry_point("plan")
    for i in range(width):
        graph.add_node(f"s{i}", node_type=node_type)
        graph.add_edge("plan", f"s{i}")
        graph.add_edge(f"s{i}", "merge")
    graph.set_finish_point("merge")
    return graph


async def test_worker_capacity_bounds_concurrency() -> None:
    gauge = {"now": 0, "max": 0, "runs": 0}

    async def search(state: State) -> dict[str, Any]:
        gauge["now"] += 1
        gauge["max"] = max(gauge["max"], gauge["now"])
        for _ in range(5):  # yield so other consumers could start if capacity allowed
            await asyncio.sleep(0)
        gauge["now"] -= 1
        gauge["runs"] += 1
        return {"hits": [gauge["runs"]]}

    searcher = Worker({"search"}, capacity=2, worker_id="searcher")
    searcher.register_node("search", search)
    planner = Worker({"planner"}, capacity=1)
    planner.register("planner")(lambda state: None)
    await searcher.start()
    await planner.start()
    try:
        result = await Orchestrator(workers=[searcher, planner]).execute(wide(6), {})
    finally:
        await searcher.stop()
        await planner.stop()
    assert gauge["runs"] == 6 and gauge["max"] == 2 and len(result["hits"]) == 6
    assert searcher.active == 0 and not searcher.running


async def test_two_workers_of_one_type_share_the_load() -> None:
    served: list[str] = []
    workers = [Worker({"search", "planner"}, capacity=1, worker_id=f"w{i}") for i in range(2)]
    for worker in workers:

        async def search(state: State, name: str = worker.worker_id) -> dict[str, Any]:
            served.append(name)
            await asyncio.sleep(0)
            return {}

        worker.register_node("search", search)
        worker.register_node("planner", lambda state: None)
        await worker.start()
    try:
        await Orchestrator(workers=workers).execute(wide(4), {})
    finally:
        for worker in workers:
            await worker.stop()
    assert sorted(served) == ["w0", "w0", "w1", "w1"]


async def test_node_type_no_worker_serves_is_an_error() -> None:
    worker = Worker({"planner"})
    worker.register_node("planner", lambda state: None)
    with pytest.raises(GraphError, match="node 's0': no worker serves node type 'search'"):
        await Orchestrator(workers=[worker]).execute(wide(1), {})
    with pytest.raises(ValueError, match="does not serve node type 'search'"):
        worker.register_node("search", lambda state: None)


async def test_worker_must_be_started() -> None:
    worker = Worker({"planner", "search"})
    worker.register_node("planner", lambda state: None)
    worker.register_node("search", lambda state: None)
    orchestrator = Orchestrator(workers=[worker])
    with pytest.raises(RuntimeError, match="is not started"):
        await orchestrator.execute(wide(1), {}, workflow_id="idle")
    status = orchestrator.get_workflow_status("idle")
    assert (
        status.status == "failed" and status.error is not None and "is not started" in status.error
    )


async def test_cancel_from_outside_while_a_node_runs() -> None:
    orchestrator = Orchestrator()
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    async def first(state: State) -> dict[str, Any]:
        runs.append("first")
        started.set()
        await release.wait()
        return {"first": True}

    graph = Graph("two")
    graph.add_node("first", first)
    graph.add_node("second", lambda s: runs.append("second"))
    graph.set_entry_point("first")
    graph.add_edge("first", "second")
    graph.set_finish_point("second")
    run = asyncio.create_task(orchestrator.execute(graph, {}, workflow_id="ext"))
    await started.wait()
    assert orchestrator.get_workflow_status("ext").nodes_pending == ["first"]
    assert orchestrator.cancel_workflow("ext") is True
    release.set()
    with pytest.raises(WorkflowCancelled):
        await run
    assert runs == ["first"]
    checkpoints = orchestrator.get_checkpoints("ext")
    assert [cp.status for cp in checkpoints] == ["running", "cancelled"]
    assert checkpoints[-1].state == {"first": True}
    result = await orchestrator.resume(graph, checkpoints[-1])  # a cancelled run can resume
    assert runs == ["first", "second"] and result["first"] is True


async def test_asyncio_cancel_of_execute_marks_the_run_cancelled() -> None:
    orchestrator = Orchestrator()
    started = asyncio.Event()

    async def hang(state: State) -> None:
        started.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(orchestrator.execute(single(hang), {}, workflow_id="killed"))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert orchestrator.get_workflow_status("killed").status == "cancelled"


async def test_stopping_a_worker_mid_task_fails_the_run() -> None:
    started = asyncio.Event()

    async def hang(state: State) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = Worker({"planner", "search"}, capacity=1, worker_id="w")
    worker.register_node("planner", lambda state: None)
    worker.register_node("search", hang)
    await worker.start()
    orchestrator = Orchestrator(workers=[worker])
    run = asyncio.create_task(orchestrator.execute(wide(2), {}, workflow_id="stopped"))
    await started.wait()  # one search task runs, the other is queued behind capacity 1
    await worker.stop()
    with pytest.raises(WorkerStopped, match="worker w stopped"):
        await run
    status = orchestrator.get_workflow_status("stopped")
    assert (
        status.status == "failed" and status.error is not None and "WorkerStopped" in status.error
    )


async def test_a_timeout_error_raised_by_the_node_is_reported_as_such() -> None:
    def raises(state: State) -> None:
        raise TimeoutError("upstream API")

    with pytest.raises(WorkflowFailed, match="TimeoutError: upstream API"):
        await Orchestrator().execute(single(raises, timeout_seconds=5), {})
