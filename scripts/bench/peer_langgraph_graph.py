"""(g3) LangGraph: the graph benchmark's 10-node chain, checkpointed, per superstep.

Runs in ``.venv-bench``: ``python -m scripts.bench.peer_langgraph_graph --saver postgres --dsn
DSN``. The same chain as ``graph_inprocess.py`` (``n0 -> ... -> n9``, ``trail`` extended and
``count`` added by reducers), as a ``StateGraph`` whose channels have ``operator.add``
reducers. Each run is a new ``thread_id``, so every superstep writes a checkpoint, as a durable
LangGraph deployment does; with Postgres its writes are counted by the server (``pgcount.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import time
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from scripts.bench.common import (
    GRAPH_NODES,
    check_graph_final,
    emit,
    graph_node_names,
    graph_node_update,
    summarize,
)
from scripts.bench.peer_langgraph import database_and_counter, open_saver, saver_parser, versions

DATABASE = "langgraph_graph_bench"


class ChainState(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    count: Annotated[int, operator.add]


def build(nodes: int, checkpointer: Any) -> Any:
    names = graph_node_names(nodes)
    graph = StateGraph(ChainState)
    for name in names:

        async def node(state: ChainState, _name: str = name) -> dict[str, Any]:
            return graph_node_update(_name)

        graph.add_node(name, node)
    graph.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    return graph.compile(checkpointer=checkpointer)


async def measure(
    kind: str, dsn: str | None, path: str | None, runs: int, warmup: int, nodes: int
) -> dict[str, Any]:
    per_superstep: list[float] = []
    before = None
    dsn, counter, counting_error = database_and_counter(kind, dsn, DATABASE)
    async with open_saver(kind, dsn, path) as saver:
        app = build(nodes, saver)
        config: dict[str, Any] = {}
        for i in range(warmup + runs):
            if i == warmup and counter is not None:
                before = counter.snapshot()
            config = {"configurable": {"thread_id": f"chain-{uuid.uuid4().hex}"}}
            started = time.perf_counter()
            state = await app.ainvoke({"count": 0, "trail": []}, config)
            elapsed = time.perf_counter() - started
            check_graph_final(dict(state), nodes)
            if i >= warmup:
                per_superstep.append(elapsed * 1000 / nodes)
        after = counter.snapshot() if counter is not None else None
        checkpoints = 0
        async for _ in saver.alist(config):
            checkpoints += 1
    result: dict[str, Any] = {
        "saver": kind,
        "nodes": nodes,
        "ms_per_superstep": summarize(per_superstep),
        "checkpoints_per_run": checkpoints,
    }
    if counter is not None and before is not None and after is not None:
        writes = counter.writes(before, after)
        supersteps = runs * nodes
        result["db_writes"] = {
            "method": "pg_stat_statements",
            "write_statements_per_superstep": writes["write_statements"] / supersteps,
            "rows_written_per_superstep": writes["rows_written"] / supersteps,
            "write_transactions_per_superstep": writes["write_transactions"] / supersteps,
        }
    elif kind == "postgres":
        result["db_writes_unavailable"] = counting_error or "no timed run"
    return result


def main() -> None:
    parser = saver_parser(__doc__)
    parser.add_argument("--nodes", type=int, default=GRAPH_NODES)
    args = parser.parse_args()
    result = asyncio.run(
        measure(args.saver, args.dsn, args.path, args.runs, args.warmup, args.nodes)
    )
    result["versions"] = versions()
    emit(result)


if __name__ == "__main__":
    main()
