"""(g1) cloudagents graph workflows in process: the benchmark's 10-node chain, per superstep.

``python -m scripts.bench.graph_inprocess --runs 30``. The graph is ``n0 -> ... -> n9``; every
node appends its name to ``trail`` (reducer ``extend``) and adds 1 to ``count`` (``add``), so
each node is one superstep and the final state is checked against the other engines'. In
process a superstep's checkpoint is kept in memory (``Orchestrator``), so this row is the
engine's own cost: planning, reducers, routing, the checkpoint copy.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from typing import Any

from scripts.bench.common import (
    GRAPH_NODES,
    check_graph_final,
    emit,
    graph_node_names,
    graph_node_update,
    summarize,
)

from cloudagents.graphs import END, Graph, NodeRegistry, Orchestrator, State


def build(nodes: int = GRAPH_NODES) -> tuple[Graph, NodeRegistry]:
    registry = NodeRegistry()
    names = graph_node_names(nodes)
    for name in names:

        async def node(state: State, _name: str = name) -> dict[str, Any]:
            return graph_node_update(_name)

        registry.register(name)(node)
    graph = Graph(name="bench_chain", reducers={"trail": "extend", "count": "add"})
    for name in names:
        graph.add_node(name, writes=["trail", "count"])
    graph.set_entry_point(names[0])
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    graph.compile(registry)
    return graph, registry


async def measure(runs: int, warmup: int, nodes: int) -> dict[str, Any]:
    graph, registry = build(nodes)
    orchestrator = Orchestrator(registry=registry)
    per_superstep: list[float] = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        state = await orchestrator.execute(graph, initial_state={"count": 0})
        elapsed = time.perf_counter() - started
        check_graph_final(state.to_dict()["data"], nodes)
        if i >= warmup:
            per_superstep.append(elapsed * 1000 / nodes)
    return {"nodes": nodes, "ms_per_superstep": summarize(per_superstep)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=GRAPH_NODES)
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.warmup, args.nodes))
    result["versions"] = {"python": sys.version.split()[0]}
    emit(result)


if __name__ == "__main__":
    main()
