"""``WorkflowStore`` (graph workflows, ``ports/graphs.py``) over the memory fake and Firestore:
graphs by name, runs, stops and resumes with their checkpoints and events, in one contract."""

from __future__ import annotations

from typing import Any

import pytest

from cloudagents.adapters.firestore.graphs import FirestoreGraphStore
from cloudagents.adapters.memory.graphs import InMemoryWorkflowStore
from cloudagents.graphs import Graph
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep, resume, start, stop
from cloudagents.ports.graphs import WorkflowStore
from tests.contract.conftest import new_id

pytestmark = pytest.mark.contract


@pytest.fixture
def workflow_store(backend: str, request: pytest.FixtureRequest) -> WorkflowStore:
    if backend == "memory":
        return InMemoryWorkflowStore()
    return FirestoreGraphStore(request.getfixturevalue("firestore_db"))


def a_graph(name: str, second: str = "b") -> CompiledGraph:
    graph = Graph(name=name)
    graph.add_node("a")
    graph.add_node(second)
    graph.set_entry_point("a")
    graph.add_edge("a", second)
    graph.set_finish_point(second)
    return graph.compile()


async def test_a_graph_name_resolves_to_the_hash_registered_last(
    workflow_store: WorkflowStore,
) -> None:
    name = new_id("g")
    first = await workflow_store.put_graph(a_graph(name))
    assert await workflow_store.graph_by_name(name) == first
    second = await workflow_store.put_graph(a_graph(name, "c"))
    assert second != first
    assert await workflow_store.graph_by_name(name) == second
    assert await workflow_store.graph_by_name(new_id("none")) is None


async def test_stop_and_resume_keep_history_and_write_one_event_each(
    workflow_store: WorkflowStore,
) -> None:
    graph = a_graph(new_id("g"))
    await workflow_store.put_graph(graph)
    wid = new_id("wf")
    first = start(graph, {"q": 1}, workflow_id=wid, max_steps=4)
    run = await workflow_store.create_run(
        first, workspace="ws", graph_name=graph.name, dispatch_seconds=30.0, priority="high"
    )
    assert (run.priority, run.resumes, run.forked_from) == ("high", 0, None)
    with pytest.raises(ValueError, match="already exists"):
        await workflow_store.create_run(
            first, workspace="ws", graph_name=graph.name, dispatch_seconds=30.0
        )
    assert await workflow_store.checkpoint(wid, 0) == first
    assert await workflow_store.checkpoint(wid, 1) is None
    with pytest.raises(ValueError, match="running"):
        await workflow_store.resume_run(wid, resume, dispatch_seconds=30.0)
    assert await workflow_store.resume_run(new_id("nobody"), resume, dispatch_seconds=1) is None

    def cancel(cp: Superstep) -> Superstep:
        return stop(cp, "cancelled", "test")

    for _ in range(2):
        assert await workflow_store.stop_run(wid, cancel) is not None
        resumed = await workflow_store.resume_run(
            wid, lambda cp: resume(cp, step_limit=9), dispatch_seconds=30.0
        )
        assert resumed is not None
        assert [t.task_id for t in resumed.dispatch] == ["0000-a"]  # no result: sent again
    assert resumed.run.resumes == 2 and resumed.run.checkpoint.step_limit == 9
    [task] = (await workflow_store.tasks(wid, ["0000-a"])).values()
    assert (task.epoch, task.dispatches, task.result) == (2, 3, None)
    checkpoints = await workflow_store.checkpoints(wid)
    assert [c.status for c in checkpoints] == [
        "running",
        "cancelled",
        "running",
        "cancelled",
        "running",
    ]
    events = await workflow_store.events(wid)
    assert [e.type for e in events] == [
        "workflow_started",
        "workflow_ended",
        "workflow_resumed",
        "workflow_ended",
        "workflow_resumed",
    ]
    assert [e.id for e in events] == sorted({e.id for e in events})
    later = await workflow_store.events(wid, after=events[2].id)
    assert later == events[3:]

    def refuse(cp: Superstep) -> Superstep:
        raise ValueError("no")

    assert await workflow_store.stop_run(wid, cancel) is not None
    with pytest.raises(ValueError, match="no"):
        await workflow_store.resume_run(wid, refuse, dispatch_seconds=30.0)
    after = await workflow_store.get_run(wid)
    assert after is not None and after.status == "cancelled"  # nothing written


async def test_a_forked_run_records_its_source(workflow_store: WorkflowStore) -> None:
    graph = a_graph(new_id("g"))
    await workflow_store.put_graph(graph)
    wid = new_id("wf")
    first = start(graph, {}, workflow_id=wid)
    run = await workflow_store.create_run(
        first,
        workspace="ws",
        graph_name=graph.name,
        dispatch_seconds=30.0,
        forked_from="src@0",
    )
    assert run.forked_from == "src@0"
    [started] = await workflow_store.events(wid)
    assert started.type == "workflow_started" and started.forked_from == "src@0"  # type: ignore[union-attr]


async def test_a_wake_up_is_claimed_once_and_a_claim_left_unfinished_is_taken_over(
    firestore_db: Any,
) -> None:
    """Superstep wake-ups (``graphs/push.py``): one delivery claims a (step, gen); a duplicate
    is told ``held`` while the claim is young and ``done`` once it is finished; a claim whose
    handler died before finishing is taken over after the hold, by one delivery only."""
    import asyncio

    store = FirestoreGraphStore(firestore_db)  # wake-ups are the graph worker service's
    wid = new_id("wf")
    claims = await asyncio.gather(*(store.claim_wake(wid, "000001-0000") for _ in range(4)))
    assert sorted(claims) == ["claimed", "held", "held", "held"]
    await store.finish_wake(wid, "000001-0000")
    assert await store.claim_wake(wid, "000001-0000") == "done"
    # a handler that claimed and died: held within the hold, then taken over exactly once
    assert await store.claim_wake(wid, "000001-0001") == "claimed"
    assert await store.claim_wake(wid, "000001-0001", hold_seconds=60) == "held"
    await asyncio.sleep(0.6)  # past the hold below; a takeover's own write is then fresh
    takeovers = await asyncio.gather(
        *(store.claim_wake(wid, "000001-0001", hold_seconds=0.5) for _ in range(3))
    )
    assert sorted(takeovers) == ["claimed", "held", "held"]
    assert await store.claim_wake(wid, "000001-0001", hold_seconds=60) == "held"
