"""Fork and resume as pure planner functions, in process, and the worker's priority gate."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from cloudagents.graphs import Graph, NodeRegistry, Orchestrator, State, WorkflowFailed
from cloudagents.graphs.distributed import BandGate
from cloudagents.graphs.events import resume_point, workflow_event_id
from cloudagents.graphs.superstep import fork, resume, start


def chain(registry: NodeRegistry) -> Graph:
    graph = Graph(name="chain")
    for node in ("a", "b", "c"):
        graph.add_node(node)
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.set_finish_point("c")
    graph.compile(registry)
    return graph


def counting_registry(calls: list[str], fail: dict[str, bool]) -> NodeRegistry:
    registry = NodeRegistry()
    for node in ("a", "b", "c"):

        def make(name: str) -> Any:
            async def run(state: State) -> dict[str, Any]:
                calls.append(name)
                if fail.get(name):
                    raise RuntimeError(f"{name} is broken")
                return {"seen": [*state.get("seen", []), name], "x": state.get("x", 0) + 1}

            return run

        registry.register(node)(make(node))
    return registry


def test_fork_copies_the_checkpoint_under_a_new_id_with_updates_written_over() -> None:
    graph = chain(counting_registry([], {})).compile()
    first = start(graph, {"x": 1, "keep": [1]}, workflow_id="src", max_steps=7)
    forked = fork(first, workflow_id="new", updates={"x": 5})
    assert (forked.workflow_id, forked.status, forked.step, forked.step_limit) == (
        "new",
        "running",
        0,
        7,
    )
    assert forked.state == {"x": 5, "keep": [1]} and first.state == {"x": 1, "keep": [1]}
    assert forked.pending == first.pending
    forked.state["keep"].append(2)
    assert first.state["keep"] == [1]  # a deep copy
    with pytest.raises(ValueError, match="leaves nothing to run"):
        fork(first, workflow_id="n", step_limit=0)
    done = first.model_copy(update={"status": "completed", "pending": []})
    with pytest.raises(ValueError, match="nothing to fork"):
        fork(done, workflow_id="n")


def test_resume_takes_a_failed_run_and_an_absolute_step_limit() -> None:
    graph = chain(counting_registry([], {})).compile()
    failed = start(graph, {}, workflow_id="w", max_steps=3).model_copy(
        update={"status": "failed", "error": "boom"}
    )
    again = resume(failed, step_limit=10)
    assert (again.status, again.error, again.step_limit) == ("running", None, 10)
    assert resume(failed, max_steps=4).step_limit == 4  # step 0 + 4 more
    at_limit = failed.model_copy(update={"status": "step_limit", "step": 3, "step_limit": 3})
    with pytest.raises(ValueError, match="raise max_steps above 3"):
        resume(at_limit, step_limit=3)


async def test_in_process_resume_after_a_failure_and_fork_from_a_step() -> None:
    calls: list[str] = []
    fail = {"c": True}
    registry = counting_registry(calls, fail)
    graph = chain(registry)
    orchestrator = Orchestrator(registry)
    with pytest.raises(WorkflowFailed) as failed:
        await orchestrator.execute(graph, {}, workflow_id="src")
    fail["c"] = False
    resumed = await orchestrator.resume(graph, failed.value.checkpoint)
    assert resumed.to_dict()["data"] == {"seen": ["a", "b", "c"], "x": 3}
    assert calls == ["a", "b", "c", "c"]
    step_one = next(c for c in orchestrator.get_checkpoints("src") if c.step == 1)
    forked = await orchestrator.fork(graph, step_one, {"x": 10}, workflow_id="fork")
    assert forked.to_dict()["data"] == {"seen": ["a", "b", "c"], "x": 12}
    assert calls[4:] == ["b", "c"]
    assert orchestrator.get_workflow_status("fork").status == "completed"
    with pytest.raises(ValueError, match="needs a new id"):
        await orchestrator.fork(graph, step_one, workflow_id="src")


def test_a_reader_resuming_inside_a_superstep_rereads_its_node_events() -> None:
    node = workflow_event_id(0, 3, "n", "0003-b-002s")
    commit = workflow_event_id(0, 3, "x", "commit")
    assert resume_point(node) == "000.000003-n"
    assert resume_point(node) < workflow_event_id(0, 3, "n", "0003-a-001s") < node
    assert resume_point(commit) == commit
    assert workflow_event_id(0, 3, "z", "end") < workflow_event_id(1, 3, "a", "resume")


async def test_the_gate_hands_a_freed_slot_to_the_highest_band_waiting() -> None:
    gate = BandGate(1)
    order: list[str] = []
    await gate.acquire(1)  # the one slot, taken

    async def take(name: str, band: int) -> None:
        async with gate.slot(band):
            order.append(name)

    waiters = [asyncio.create_task(take(n, b)) for n, b in [("low", 2), ("normal", 1), ("high", 0)]]
    while gate.waiting < 3:
        await asyncio.sleep(0)
    cancelled = asyncio.create_task(take("cancelled-high", 0))
    while gate.waiting < 4:
        await asyncio.sleep(0)
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    gate.release()
    await asyncio.gather(*waiters)
    assert order == ["high", "normal", "low"]
    assert gate.free == 1 and gate.waiting == 0
