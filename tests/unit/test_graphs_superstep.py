"""The superstep planner driven directly: task results in, next superstep out."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cloudagents.graphs import END, Graph, GraphError, State
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import (
    RouteDecision,
    Superstep,
    TaskResult,
    advance,
    resume,
    route_decision,
    router_view,
    start,
)


def noop(state: State) -> None:
    return None


def pick(state: State) -> str:
    return "unused: the planner is given decisions, it never calls routers"


def build(
    edges: list[tuple[str, str]],
    branches: dict[str, dict[str, str]] | None = None,
    entry: str = "s",
    **reducers: str,
) -> CompiledGraph:
    graph = Graph("t", reducers=reducers)
    names = sorted(
        {n for e in edges for n in e}
        | set(branches or {})
        | {t for b in (branches or {}).values() for t in b.values()}
        | {entry}
    )
    for name in names:
        if name != END:
            graph.add_node(name, noop)
    for source, target in edges:
        graph.add_edge(source, target)
    for source, targets in (branches or {}).items():
        graph.add_conditional_edge(source, pick, targets)
    graph.set_entry_point(entry)
    return graph.compile()


def done(
    cp: Superstep,
    node: str,
    update: dict[str, Any] | None = None,
    key: str | None = None,
    graph: CompiledGraph | None = None,
) -> TaskResult:
    task = next(t for t in cp.pending if t.node == node)
    route = route_decision(graph, node, key) if graph is not None and key is not None else None
    return TaskResult(
        task_id=task.task_id, node=node, status="done", update=update or {}, route=route
    )


def test_start_plans_the_entry_task() -> None:
    graph = build([("s", "a"), ("a", END)])
    cp = start(graph, {"q": 1}, workflow_id="wf")
    assert [t.model_dump() for t in cp.pending] == [
        {"task_id": "0000-s", "step": 0, "node": "s", "node_type": "s"}
    ]
    assert (cp.step, cp.status, cp.step_limit, cp.graph_hash) == (0, "running", 50, graph.hash)


def test_linear_advance_and_end() -> None:
    graph = build([("s", "a"), ("a", END)])
    cp = start(graph, {"q": 1}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s", {"x": 1})])
    assert [t.task_id for t in cp.pending] == ["0001-a"] and cp.state == {"q": 1, "x": 1}
    cp = advance(graph, cp, [done(cp, "a", {"x": 2})])
    assert (
        cp.status == "completed"
        and cp.pending == []
        and cp.state == {"q": 1, "x": 2}
        and cp.step == 2
    )


def test_fan_out_join_fires_once_in_node_name_order() -> None:
    graph = build(
        [("s", "b1"), ("s", "b2"), ("s", "b3"), ("b1", "j"), ("b2", "j"), ("b3", "j"), ("j", END)],
        xs="extend",
    )
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s")])
    assert [t.node for t in cp.pending] == ["b1", "b2", "b3"]
    results = [done(cp, n, {"xs": [n]}) for n in ("b3", "b1", "b2")]
    shuffled = list(results)
    random.Random(7).shuffle(shuffled)
    nxt = advance(graph, cp, results)
    assert nxt == advance(graph, cp, shuffled)  # the order results arrive in does not matter
    assert [t.task_id for t in nxt.pending] == ["0002-j"] and nxt.joins == {}
    assert nxt.state["xs"] == ["b1", "b2", "b3"]


def test_join_waits_across_supersteps_for_a_longer_branch() -> None:
    graph = build([("s", "b"), ("b", "c"), ("c", "j"), ("s", "j"), ("j", END)])
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s")])
    assert [t.node for t in cp.pending] == ["b"] and cp.joins == {"j": {"s": "done"}}
    cp = advance(graph, cp, [done(cp, "b")])
    assert [t.node for t in cp.pending] == ["c"] and cp.joins == {"j": {"s": "done"}}
    cp = advance(graph, cp, [done(cp, "c")])
    assert [t.node for t in cp.pending] == ["j"] and cp.joins == {}


def test_branch_not_taken_is_skipped_so_the_join_fires() -> None:
    graph = build(
        [("l", "l2"), ("l2", "j"), ("r", "j"), ("j", END)], {"s": {"left": "l", "right": "r"}}
    )
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s", key="right", graph=graph)])
    assert [t.node for t in cp.pending] == ["r"]
    assert cp.skipped == ["l", "l2"] and cp.joins == {"j": {"l2": "skipped"}}
    assert cp.routes == {"s": RouteDecision(key="right", target="r")}
    cp = advance(graph, cp, [done(cp, "r")])
    assert [t.node for t in cp.pending] == ["j"] and cp.joins == {}
    cp = advance(graph, cp, [done(cp, "j")])
    assert cp.status == "completed"


def test_every_predecessor_skipped_skips_the_join_too() -> None:
    graph = build([("x", "j"), ("y", "j"), ("j", END)], {"s": {"x": "x", "y": "y", "stop": END}})
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s", key="stop", graph=graph)])
    assert cp.status == "completed" and cp.skipped == ["j", "x", "y"] and cp.joins == {}


def test_loop_re_entry_does_not_wait_for_a_branch_that_cannot_run_again() -> None:
    # Round 1: x and y join at j. j loops back to x only; y is dead, so j fires after x alone.
    graph = build(
        [("s", "x"), ("s", "y"), ("x", "j"), ("y", "j")], {"j": {"again": "x", "done": END}}
    )
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s")])
    cp = advance(graph, cp, [done(cp, "x"), done(cp, "y")])
    assert [t.node for t in cp.pending] == ["j"]
    cp = advance(graph, cp, [done(cp, "j", key="again", graph=graph)])
    assert [t.task_id for t in cp.pending] == ["0003-x"]
    cp = advance(graph, cp, [done(cp, "x")])
    assert [t.task_id for t in cp.pending] == ["0004-j"] and cp.joins == {}
    cp = advance(graph, cp, [done(cp, "j", key="done", graph=graph)])
    assert cp.status == "completed"


def test_failed_task_fails_the_run_and_keeps_the_pending_tasks() -> None:
    graph = build([("s", "a"), ("s", "b"), ("a", END), ("b", END)])
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s")])
    failed = TaskResult(
        task_id="0001-b", node="b", status="failed", error="KeyError: 'x'", attempts=3
    )
    out = advance(graph, cp, [done(cp, "a", {"k": 1}), failed])
    assert (
        out.status == "failed" and out.error == "node 'b' failed after 3 attempt(s): KeyError: 'x'"
    )
    assert out.pending == cp.pending and out.state == cp.state  # nothing of the step committed


def test_results_must_match_the_pending_tasks() -> None:
    graph = build([("s", "a"), ("a", END)])
    cp = start(graph, {}, workflow_id="wf")
    with pytest.raises(ValueError, match="needs results for"):
        advance(graph, cp, [])
    with pytest.raises(ValueError, match="needs results for"):
        advance(graph, cp, [done(cp, "s"), done(cp, "s")])


def test_missing_route_decision_fails() -> None:
    graph = build([("a", END)], {"s": {"go": "a"}})
    cp = start(graph, {}, workflow_id="wf")
    out = advance(graph, cp, [done(cp, "s")])
    assert out.status == "failed" and out.error == "node 's' has no valid route decision"


def test_parallel_last_value_write_fails_naming_both_nodes() -> None:
    graph = build([("s", "a"), ("s", "b"), ("a", END), ("b", END)])
    cp = advance(graph, (first := start(graph, {}, workflow_id="wf")), [done(first, "s")])
    out = advance(graph, cp, [done(cp, "b", {"report": 2}), done(cp, "a", {"report": 1})])
    assert out.status == "failed"
    assert out.error is not None and "nodes 'a' and 'b' both wrote 'report'" in out.error


def test_step_limit_stops_with_a_resumable_checkpoint() -> None:
    graph = build([], {"s": {"again": "s", "done": END}})
    cp = start(graph, {"n": 0}, workflow_id="wf", max_steps=3)
    for _ in range(3):
        assert cp.status == "running"
        cp = advance(graph, cp, [done(cp, "s", {"n": cp.state["n"] + 1}, key="again", graph=graph)])
    assert (
        cp.status == "step_limit" and cp.step == 3 and [t.task_id for t in cp.pending] == ["0003-s"]
    )
    assert cp.error == "step limit reached after 3 supersteps"
    again = resume(Superstep.model_validate_json(cp.model_dump_json()), max_steps=2)
    assert (again.status, again.step_limit) == ("running", 5)
    again = advance(graph, again, [done(again, "s", key="done", graph=graph)])
    assert again.status == "completed" and again.state == {"n": 3}
    with pytest.raises(ValueError, match="cannot resume"):
        resume(again)


def test_router_view_and_route_decision() -> None:
    graph = build([("a", END)], {"s": {"go": "a", "stop": END}}, xs="extend")
    view = router_view(graph, {"xs": [1], "k": "old"}, "s", {"xs": [2], "k": "new"})
    assert view == {"xs": [1, 2], "k": "new"}
    assert route_decision(graph, "s", "stop") == RouteDecision(key="stop", target=END)
    with pytest.raises(
        GraphError,
        match=r"router 'pick' of node 's' returned 'sideways'; expected one of \['go', 'stop'\]",
    ):
        route_decision(graph, "s", "sideways")


def test_checkpoint_is_plain_json_data() -> None:
    graph = build([("l", "j"), ("r", "j"), ("j", END)], {"s": {"left": "l", "right": "r"}})
    cp = start(graph, {"q": [1]}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s", {"a": {"b": 1}}, key="left", graph=graph)])
    assert Superstep.model_validate_json(cp.model_dump_json()) == cp
    assert cp.model_dump(mode="json")["joins"] == {"j": {"r": "skipped"}}


def test_a_skipped_arrival_is_upgraded_when_the_looping_branch_later_takes_the_edge() -> None:
    # b loops on itself once, then goes to j; j must wait for d and fire once, after both.
    graph = build(
        [("s", "b"), ("s", "c"), ("c", "d"), ("d", "j"), ("j", END)],
        {"b": {"loop": "b", "go": "j"}},
    )
    cp = start(graph, {}, workflow_id="wf")
    cp = advance(graph, cp, [done(cp, "s")])
    cp = advance(graph, cp, [done(cp, "b", key="loop", graph=graph), done(cp, "c")])
    assert [t.node for t in cp.pending] == ["b", "d"] and cp.joins == {"j": {"b": "skipped"}}
    cp = advance(graph, cp, [done(cp, "b", key="go", graph=graph), done(cp, "d")])
    assert [t.task_id for t in cp.pending] == ["0003-j"] and cp.joins == {}
