"""The planner's join guarantees over many random graphs and routing choices (seeded).

On an acyclic graph every node must fire at most once; it fires exactly when some
predecessor that fired took the edge to it; and it fires only after every predecessor that
fires at all. With loops added, runs must end (or hit the step limit) without a join hanging.
"""

from __future__ import annotations

import random

import pytest

from cloudagents.graphs import END, Graph, State
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Superstep, TaskResult, advance, route_decision, start


def noop(state: State) -> None:
    return None


def pick(state: State) -> str:
    return "never called by the planner"


def random_graph(rng: random.Random, *, loops: bool) -> CompiledGraph:
    size = rng.randint(2, 9)
    names = [f"n{i}" for i in range(size)]
    graph = Graph("random")
    for name in names:
        graph.add_node(name, noop)
    graph.set_entry_point(names[0])
    outgoing: dict[str, set[str]] = {n: set() for n in names}
    branched: set[str] = set()
    for i in range(1, size):  # every node reachable: one edge from an earlier node at least
        outgoing[names[rng.randrange(i)]].add(names[i])
        for j in range(i):
            if rng.random() < 0.2:
                outgoing[names[j]].add(names[i])
    for i, name in enumerate(names):
        later = names[i + 1 :]
        if later and rng.random() < 0.4:
            targets = {f"k{t}": t for t in rng.sample(later, rng.randint(1, min(3, len(later))))}
            if rng.random() < 0.5:
                targets["stop"] = END
            if loops and i > 0 and rng.random() < 0.5:
                targets["back"] = names[rng.randrange(i)]
            graph.add_conditional_edge(name, pick, targets)
            branched.add(name)
            outgoing[name] -= set(targets.values())  # one way to each target keeps it readable
        for target in sorted(outgoing[name]):
            graph.add_edge(name, target)
        # A node with nowhere to go ends; a routing node sometimes ends as well.
        ends_anyway = name in branched and rng.random() < 0.3
        if (not outgoing[name] and name not in branched) or ends_anyway:
            graph.set_finish_point(name)
    if names[-1] not in branched:
        graph.set_finish_point(names[-1])
    return graph.compile()


def simulate(
    graph: CompiledGraph, rng: random.Random, max_steps: int = 60
) -> tuple[Superstep, dict[str, list[int]], list[tuple[str, str, int]]]:
    """Run the planner with random routing; return the last checkpoint, each node's firing
    steps, and every edge taken as (source, target, step)."""
    cp = start(graph, {}, workflow_id="wf", max_steps=max_steps)
    fired: dict[str, list[int]] = {}
    taken: list[tuple[str, str, int]] = []
    while cp.status == "running":
        results = []
        for task in cp.pending:
            fired.setdefault(task.node, []).append(cp.step)
            route = None
            branch = graph.branches.get(task.node)
            if branch is not None:
                route = route_decision(graph, task.node, rng.choice(sorted(branch.targets)))
                taken.append((task.node, route.target, cp.step))
            for target in graph.static_targets(task.node):
                taken.append((task.node, target, cp.step))
            results.append(
                TaskResult(task_id=task.task_id, node=task.node, status="done", route=route)
            )
        cp = advance(graph, cp, results)
    return cp, fired, taken


@pytest.mark.parametrize("seed", range(300))
def test_acyclic_joins_fire_once_exactly_when_an_edge_is_taken(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_graph(rng, loops=False)
    assert graph.topology.back_edges == []
    cp, fired, taken = simulate(graph, rng)
    assert cp.status == "completed" and cp.joins == {}
    assert all(len(steps) == 1 for steps in fired.values()), fired
    activated = {t for _, t, _ in taken if t != END} | {graph.entry_point}
    assert set(fired) == activated
    preds = graph.topology.forward_predecessors
    for node, (step,) in fired.items():
        for pred in preds[node]:
            if pred in fired:  # waits for every predecessor that runs at all
                assert fired[pred][0] < step, (node, pred, fired)


@pytest.mark.parametrize("seed", range(300))
def test_loops_end_or_hit_the_step_limit_without_hanging(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    graph = random_graph(rng, loops=True)
    cp, fired, _ = simulate(graph, rng, max_steps=40)
    assert cp.status in ("completed", "step_limit")
    if cp.status == "completed":
        assert cp.joins == {} and cp.pending == []
    else:
        assert cp.step == 40 and cp.pending
    assert all(steps == sorted(set(steps)) for steps in fired.values())  # once per superstep
