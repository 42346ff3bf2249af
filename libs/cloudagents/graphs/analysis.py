"""Compile-time analysis: which nodes can share a superstep, and do they clash on a key.

The superstep shapes are found by running the planner's own ``propagate`` over every
routing choice (state values do not matter to the structure), so the check agrees with
what the planner does at run time.
"""

from __future__ import annotations

from itertools import product

from cloudagents.graphs.errors import GraphError
from cloudagents.graphs.spec import CompiledGraph
from cloudagents.graphs.superstep import Arrival, RouteDecision, propagate

MAX_SHAPES = 10_000
"""Distinct (frontier, join arrivals) pairs explored before giving up."""

Shape = tuple[frozenset[str], tuple[tuple[str, tuple[tuple[str, Arrival], ...]], ...]]


def _freeze(
    joins: dict[str, dict[str, Arrival]],
) -> tuple[tuple[str, tuple[tuple[str, Arrival], ...]], ...]:
    return tuple(sorted((k, tuple(sorted(v.items()))) for k, v in joins.items()))


def possible_frontiers(graph: CompiledGraph) -> set[frozenset[str]]:
    """Every set of nodes that can form one superstep, over all routing choices."""
    start: Shape = (frozenset({graph.entry_point}), ())
    seen: set[Shape] = {start}
    todo = [start]
    while todo:
        frontier, frozen = todo.pop()
        joins = {k: dict(v) for k, v in frozen}
        choices: list[list[RouteDecision | None]] = []
        names = sorted(frontier)
        for name in names:
            branch = graph.branches.get(name)
            if branch is None:
                choices.append([None])
            else:
                choices.append(
                    [RouteDecision(key=k, target=t) for k, t in sorted(branch.targets.items())]
                )
        for combo in product(*choices):
            nxt = propagate(graph, dict(zip(names, combo, strict=True)), joins)
            if not nxt.activated:
                continue
            shape: Shape = (frozenset(nxt.activated), _freeze(nxt.joins))
            if shape not in seen:
                if len(seen) >= MAX_SHAPES:
                    raise GraphError(
                        f"graph {graph.name!r} has over {MAX_SHAPES} superstep shapes; "
                        "remove the declared writes to skip the compile-time conflict check"
                    )
                seen.add(shape)
                todo.append(shape)
    return {frontier for frontier, _ in seen}


def check_write_conflicts(graph: CompiledGraph) -> None:
    """Reject two nodes that can run in one superstep and both declare a ``last_value`` key."""
    writers: dict[str, list[str]] = {}
    for node in sorted(graph.nodes.values(), key=lambda n: n.name):
        for key in node.writes or []:
            if graph.reducer_for(key) == "last_value":
                writers.setdefault(key, []).append(node.name)
    contested = {k: v for k, v in writers.items() if len(v) > 1}
    if not contested:
        return  # nothing to clash: skip the exploration
    frontiers = sorted(possible_frontiers(graph), key=lambda f: (len(f), sorted(f)))
    for key in sorted(contested):
        for frontier in frontiers:
            together = [n for n in contested[key] if n in frontier]
            if len(together) > 1:
                raise GraphError(
                    f"nodes {together[0]!r} and {together[1]!r} can run in the same superstep "
                    f"and both write {key!r} (reducer last_value); declare a reducer for "
                    f"{key!r} with graph.add_reducer or let one node write it"
                )
