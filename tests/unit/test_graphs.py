"""Graph building, compile-time validation, reducers, write conflicts, JSON/hash, State."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudagents.graphs import (
    END,
    CompiledGraph,
    Graph,
    GraphError,
    NodeRegistry,
    Orchestrator,
    RetryPolicy,
    State,
    WorkflowFailed,
)
from cloudagents.graphs.analysis import possible_frontiers
from cloudagents.graphs.bindings import resolve
from cloudagents.graphs.core.graph import END as SEED_END
from cloudagents.graphs.core.graph import Graph as SeedGraph


def noop(state: State) -> None:
    return None


def linear(name: str = "g") -> Graph:
    graph = Graph(name)
    graph.add_node("a", noop)
    graph.add_node("b", noop)
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.set_finish_point("b")
    return graph


def test_seed_import_paths() -> None:
    assert SEED_END is END
    assert SeedGraph is Graph


# --- compile errors ------------------------------------------------------------------------


def test_no_entry_point() -> None:
    graph = Graph("g")
    graph.add_node("a", noop)
    graph.set_finish_point("a")
    with pytest.raises(GraphError, match="no entry point"):
        graph.compile()


def test_entry_point_not_a_node() -> None:
    graph = linear()
    graph.set_entry_point("zzz")
    with pytest.raises(GraphError, match="entry point 'zzz'"):
        graph.compile()


def test_graph_error_is_a_value_error() -> None:
    assert issubclass(GraphError, ValueError)


@pytest.mark.parametrize(
    ("source", "target", "unknown"),
    [("a", "ghost", "to unknown node 'ghost'"), ("ghost", "b", "from unknown node 'ghost'")],
)
def test_edge_to_or_from_unknown_node(source: str, target: str, unknown: str) -> None:
    graph = linear()
    graph.add_edge(source, target)
    with pytest.raises(GraphError, match=f"edge '{source}' -> '{target}' goes {unknown}"):
        graph.compile()


def test_edge_from_end() -> None:
    with pytest.raises(GraphError, match="nothing runs after END"):
        linear().add_edge(END, "a")


def test_conditional_target_unknown() -> None:
    graph = linear()
    graph.add_conditional_edge("b", lambda s: "x", {"x": "nowhere", "y": END})
    with pytest.raises(GraphError, match="target 'x' -> 'nowhere' is neither a node nor END"):
        graph.compile()


def test_conditional_from_unknown_node() -> None:
    graph = linear()
    graph.add_conditional_edge("ghost", lambda s: "x", {"x": END})
    with pytest.raises(GraphError, match="conditional edge from unknown node 'ghost'"):
        graph.compile()


def test_unreachable_node() -> None:
    graph = linear()
    graph.add_node("island", noop)
    graph.set_finish_point("island")
    with pytest.raises(GraphError, match=r"nodes \['island'\] cannot be reached"):
        graph.compile()


def test_node_that_cannot_reach_end() -> None:
    graph = linear()
    graph.add_node("sink", noop)
    graph.add_edge("a", "sink")
    with pytest.raises(GraphError, match=r"nodes \['sink'\] cannot reach END"):
        graph.compile()


def test_loop_without_exit_cannot_reach_end() -> None:
    graph = Graph("g")
    graph.add_node("a", noop)
    graph.add_node("b", noop)
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "a")
    with pytest.raises(GraphError, match=r"nodes \['a', 'b'\] cannot reach END"):
        graph.compile()


def test_duplicate_node_and_reserved_name() -> None:
    graph = linear()
    with pytest.raises(GraphError, match="already in graph"):
        graph.add_node("a", noop)
    with pytest.raises(GraphError, match="reserved"):
        graph.add_node(END, noop)


def test_unregistered_node_function_with_registry() -> None:
    registry = NodeRegistry()
    registry.register("a")(noop)
    graph = Graph("g")
    graph.add_node("a")
    graph.add_node("b", node_type="summariser")
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.set_finish_point("b")
    graph.compile()  # without a registry nothing is looked up yet
    with pytest.raises(
        GraphError, match="node 'b': no function registered for node type 'summariser'"
    ):
        graph.compile(registry=registry)


async def test_orchestrator_checks_registration_again() -> None:
    graph = Graph("g")
    graph.add_node("a")
    graph.set_entry_point("a")
    graph.set_finish_point("a")
    graph.compile()
    with pytest.raises(GraphError, match="node 'a'"):
        await Orchestrator(NodeRegistry()).execute(graph, {})


def test_unregistered_router_and_reducer() -> None:
    graph = CompiledGraph.from_json(_branching().compile().to_json())
    registry = NodeRegistry()
    for name in ("a", "b"):
        registry.register(name)(noop)
    with pytest.raises(GraphError, match="router 'pick' is not registered"):
        resolve(graph, registry)
    reducing = linear().add_reducer("k", "median")
    with pytest.raises(GraphError, match="state key 'k': reducer 'median' is not registered"):
        reducing.compile(registry=registry)


def _branching() -> Graph:
    registry = NodeRegistry()

    @registry.register_router("pick")
    def choose(state: State) -> str:
        return "done"

    graph = Graph("branching")
    graph.add_node("a", noop)
    graph.add_node("b", noop)
    graph.set_entry_point("a")
    graph.add_conditional_edge("a", choose, {"more": "b", "done": END})
    graph.set_finish_point("b")
    return graph


# --- compiled graph as data ----------------------------------------------------------------


def route_after_review(state: State) -> str:
    return str(state.get("decision", "revise"))


def review_graph(max_revisions: str = "x") -> Graph:
    graph = Graph("review", description=max_revisions)
    graph.add_node("writer")
    graph.add_node("reviewer", retry=RetryPolicy(max_attempts=2, retry_on=(TimeoutError,)))
    graph.add_node("publisher", timeout_seconds=5)
    graph.set_entry_point("writer")
    graph.add_edge("writer", "reviewer")
    graph.add_conditional_edge(
        "reviewer", route_after_review, {"approve": "publisher", "revise": "writer"}
    )
    graph.set_finish_point("publisher")
    return graph


def test_same_graph_twice_same_hash_and_a_change_changes_it() -> None:
    one, two = review_graph().compile(), review_graph().compile()
    assert one.to_json() == two.to_json()
    assert one.hash == two.hash and len(one.hash) == 64
    assert review_graph("y").compile().hash != one.hash
    changed = review_graph()
    changed.add_reducer("notes", "append")
    assert changed.compile().hash != one.hash


def test_json_round_trip_names_functions_not_closures() -> None:
    compiled = review_graph().compile()
    text = compiled.to_json()
    assert '"router":"route_after_review"' in text
    assert "RetryPolicy" not in text and "TimeoutError" in text
    loaded = CompiledGraph.from_json(text)
    assert loaded.to_json() == text and loaded.hash == compiled.hash
    assert loaded.nodes["reviewer"].retry == RetryPolicy(max_attempts=2, retry_on=("TimeoutError",))


def test_registered_router_name_is_stable_with_or_without_registry() -> None:
    compiled = _branching().compile()
    assert compiled.branches["a"].router == "pick"


def test_newer_schema_version_is_refused() -> None:
    document = review_graph().compile().model_dump(mode="json")
    document["schema_version"] = 99
    with pytest.raises(ValueError, match="newer than this release"):
        CompiledGraph.model_validate(document)


async def test_graph_from_json_runs_with_a_registry() -> None:
    registry = NodeRegistry()
    count = {"n": 0}

    @registry.register("writer")
    def write(state: State) -> dict[str, Any]:
        count["n"] += 1
        return {"draft": count["n"]}

    @registry.register("reviewer")
    def review(state: State) -> dict[str, Any]:
        return {"decision": "approve" if state["draft"] >= 2 else "revise"}

    registry.register("publisher")(lambda state: {"published": state["draft"]})
    registry.register_router("route_after_review")(route_after_review)
    loaded = CompiledGraph.from_json(review_graph().compile().to_json())
    result = await Orchestrator(registry).execute(loaded, {})
    assert result["published"] == 2


# --- reducers -------------------------------------------------------------------------------


def fan_out(
    reducers: dict[str, str] | None = None, *, writes: bool = False
) -> tuple[Graph, list[str]]:
    fired: list[str] = []
    graph = Graph("fan", reducers=reducers)

    def split(state: State) -> None:
        fired.append("split")

    def branch(label: str) -> Any:
        async def run(state: State) -> dict[str, Any]:
            fired.append(label)
            return {"findings": [label], "count": 1, "meta": {label: True}, "seen": label}

        return run

    def join(state: State) -> dict[str, Any]:
        fired.append("join")
        return {"summary": sorted(state["findings"])}

    graph.add_node("split", split)
    for i in range(4):
        graph.add_node(f"b{i}", branch(f"b{i}"), writes=["findings"] if writes else None)
        graph.add_edge("split", f"b{i}")
        graph.add_edge(f"b{i}", "join")
    graph.add_node("join", join)
    graph.set_entry_point("split")
    graph.set_finish_point("join")
    return graph, fired


async def test_parallel_extend_joins_once() -> None:
    graph, fired = fan_out(
        {"findings": "extend", "count": "add", "meta": "merge", "seen": "append"}
    )
    orchestrator = Orchestrator()
    result = await orchestrator.execute(graph, {"findings": ["seed"]}, workflow_id="fan")
    # Reducers fold in node-name order, so the list order is fixed, not a race.
    assert result["findings"] == ["seed", "b0", "b1", "b2", "b3"]
    assert result["count"] == 4
    assert result["meta"] == {"b0": True, "b1": True, "b2": True, "b3": True}
    assert result["seen"] == ["b0", "b1", "b2", "b3"]
    assert fired.count("join") == 1
    steps = [cp.completed for cp in orchestrator.get_checkpoints("fan")]
    assert steps == [["split"], ["b0", "b1", "b2", "b3"], ["join"]]


async def test_registered_reducer() -> None:
    registry = NodeRegistry()

    @registry.register_reducer("longest")
    def longest(current: Any, update: Any) -> Any:
        return update if current is None or len(update) > len(current) else current

    graph = Graph("g", reducers={"word": "longest"})
    graph.add_node("a", lambda s: {"word": "kiwi"})
    graph.add_node("b", lambda s: {"word": "banana"})
    graph.add_node("c", lambda s: {"word": "fig"})
    graph.add_node("s", noop)
    graph.set_entry_point("s")
    for n in "abc":
        graph.add_edge("s", n)
        graph.set_finish_point(n)
    result = await Orchestrator(registry).execute(graph, {})
    assert result["word"] == "banana"


def test_builtin_reducer_names_cannot_be_reregistered() -> None:
    with pytest.raises(ValueError, match="built in"):
        NodeRegistry().register_reducer("extend")


async def test_reducer_type_error_fails_the_workflow() -> None:
    graph = linear().add_reducer("xs", "extend")
    graph.add_node("c", lambda s: {"xs": 3})
    graph.add_edge("b", "c")
    graph.set_finish_point("c")
    with pytest.raises(WorkflowFailed, match="reducer 'extend' of key 'xs' rejected node 'c'"):
        await Orchestrator().execute(graph, {})


# --- write conflicts ------------------------------------------------------------------------


def test_compile_rejects_parallel_last_value_writers() -> None:
    graph, _ = fan_out(writes=True)
    with pytest.raises(
        GraphError,
        match="nodes 'b0' and 'b1' can run in the same superstep and both write 'findings'",
    ):
        graph.compile()


def test_declared_writers_in_sequence_or_with_a_reducer_are_fine() -> None:
    graph, _ = fan_out({"findings": "extend"}, writes=True)
    graph.compile()
    sequential = Graph("seq")
    sequential.add_node("a", noop, writes=["report"])
    sequential.add_node("b", noop, writes=["report"])
    sequential.set_entry_point("a")
    sequential.add_edge("a", "b")
    sequential.set_finish_point("b")
    sequential.compile()


def test_compile_sees_loop_overlap_conflicts() -> None:
    # c loops back to a while b's successor d runs: a and d share a superstep.
    graph = Graph("overlap")
    graph.add_node("a", noop, writes=["k"])
    graph.add_node("b", noop)
    graph.add_node("c", noop)
    graph.add_node("d", noop, writes=["k"])
    graph.set_entry_point("a")
    graph.add_edge("a", "b")
    graph.add_edge("a", "c")
    graph.add_edge("b", "d")
    graph.set_finish_point("d")
    graph.add_conditional_edge("c", lambda s: "again", {"again": "a", "stop": END})
    with pytest.raises(GraphError, match="nodes 'a' and 'd' can run in the same superstep"):
        graph.compile()


async def test_undeclared_parallel_writes_fail_at_run_time() -> None:
    graph, _ = fan_out()  # every branch writes 'findings' (and more) as last_value
    orchestrator = Orchestrator()
    with pytest.raises(WorkflowFailed) as caught:
        await orchestrator.execute(graph, {}, workflow_id="clash")
    message = str(caught.value)
    assert "nodes 'b0' and 'b1' both wrote 'findings' in one superstep" in message
    status = orchestrator.get_workflow_status("clash")
    assert status.status == "failed" and status.error is not None and "'b0'" in status.error


# --- State ----------------------------------------------------------------------------------


def test_state_is_dict_like() -> None:
    state = State(workflow_id="wf_123")
    state["query"] = "AI trends"
    state.update({"results": [], "n": 1})
    assert state.get("query") == "AI trends" and state.get("missing", 7) == 7
    assert "n" in state and set(state.keys()) == {"query", "results", "n"}
    assert dict(state.items())["n"] == 1 and len(state) == 3


def test_checkpoint_restore_round_trip() -> None:
    state = State("wf", {"items": [1, 2]}, step=3)
    cp = state.checkpoint("writer")
    assert (cp.workflow_id, cp.node, cp.step, cp.data) == ("wf", "writer", 3, {"items": [1, 2]})
    state["items"].append(3)  # the checkpoint holds a copy
    state["extra"] = True
    assert cp.data == {"items": [1, 2]}
    state.restore_from_checkpoint(cp)
    assert dict(state) == {"items": [1, 2]} and state.step == 3
    other = State()
    other.restore_from_checkpoint(cp.model_dump(mode="json"))
    assert other.workflow_id == "wf" and dict(other) == {"items": [1, 2]}


def test_to_dict_from_dict() -> None:
    state = State("wf", {"a": {"b": [1]}}, step=2)
    document = state.to_dict()
    assert document == {
        "schema_version": 1,
        "workflow_id": "wf",
        "step": 2,
        "data": {"a": {"b": [1]}},
    }
    again = State.from_dict(document)
    assert again.to_dict() == document
    document["data"]["a"]["b"].append(2)
    assert state["a"] == {"b": [1]}


def test_possible_frontiers_follow_the_planner() -> None:
    fan, _ = fan_out()
    assert possible_frontiers(fan.compile()) == {
        frozenset({"split"}),
        frozenset({"b0", "b1", "b2", "b3"}),
        frozenset({"join"}),
    }
    loop = review_graph().compile()
    assert possible_frontiers(loop) == {frozenset({n}) for n in ("writer", "reviewer", "publisher")}


def test_from_json_checks_the_structure_again() -> None:
    document = json.loads(review_graph().compile().to_json())
    document["edges"].append({"source": "publisher", "target": "ghost"})
    with pytest.raises(
        GraphError, match="edge 'publisher' -> 'ghost' goes to unknown node 'ghost'"
    ):
        CompiledGraph.from_json(json.dumps(document))
    document = json.loads(review_graph().compile().to_json())
    document["entry_point"] = "reviewer"  # writer is then only reachable through the loop
    assert CompiledGraph.from_json(json.dumps(document)).entry_point == "reviewer"
    document["edges"] = []
    with pytest.raises(
        GraphError, match=r"nodes \['publisher', 'reviewer', 'writer'\] cannot reach END"
    ):
        CompiledGraph.from_json(json.dumps(document))


def test_two_different_routers_with_one_name_are_refused() -> None:
    graph = linear()
    graph.add_conditional_edge("a", lambda s: "x", {"x": "b"})
    with pytest.raises(GraphError, match="two different routers are both named"):
        graph.add_conditional_edge("b", lambda s: "y", {"y": END})
    with pytest.raises(GraphError, match="already has a conditional edge"):
        graph.add_conditional_edge("a", "named", {"x": "b"})
