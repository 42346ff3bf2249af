"""(g2) cloudagents graph workflows distributed on the emulators: the 10-node chain, per superstep.

``python -m scripts.bench.graph_distributed --runs 20``. It uses the same chain as
``graph_inprocess.py``. A ``DistributedOrchestrator`` and one ``DistributedWorker`` serving all
ten node types coordinate only through their own Firestore and Pub/Sub emulators, started here.
Per superstep that is: a streaming-pull delivery, the claim (a guarded batch on the task
document), the result saved first-write-wins, the advance (one guarded batch: run document,
checkpoint, next task), and one publish. Firestore operations are counted by the adapters
(``cloudagents.metrics``) for both processes' work, since they share this one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from scripts.bench.common import (
    GRAPH_NODES,
    check_graph_final,
    emit,
    graph_node_names,
    graph_node_update,
    summarize,
)
from scripts.bench.graph_inprocess import build

from cloudagents import metrics
from cloudagents.graphs import State
from cloudagents.graphs.distributed import DistributedOrchestrator, DistributedWorker
from cloudagents.local.emulators import start_firestore, start_pubsub

PROJECT = "bench-graphs"


async def measure(runs: int, warmup: int, nodes: int) -> dict[str, Any]:
    graph, _ = build(nodes)
    workspace = f"bench{uuid.uuid4().hex[:6]}"
    names = graph_node_names(nodes)
    worker = DistributedWorker(
        worker_id="bench-worker",
        node_types=set(names),
        capacity=4,
        project_id=PROJECT,
        workspace=workspace,
    )
    for name in names:

        async def node(state: State, _name: str = name) -> dict[str, Any]:
            return graph_node_update(_name)

        worker.register_node(name, node)
    orchestrator = DistributedOrchestrator(
        project_id=PROJECT, workspace=workspace, poll_interval=0.005
    )
    await orchestrator.connect()
    await worker.start()
    per_superstep: list[float] = []
    writes: list[float] = []
    reads: list[float] = []
    publishes: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        for i in range(warmup + runs):
            metrics.reset()
            started = loop.time()
            state = await orchestrator.execute(graph, initial_state={"count": 0})
            elapsed = loop.time() - started
            check_graph_final(dict(state), nodes)
            if i >= warmup:
                ops = metrics.snapshot()
                per_superstep.append(elapsed * 1000 / nodes)
                writes.append(ops.get("firestore.write", 0) / nodes)
                reads.append(ops.get("firestore.read", 0) / nodes)
                publishes.append(ops.get("pubsub.publish", 0) / nodes)
    finally:
        await worker.stop()
        await orchestrator.close()
    return {
        "nodes": nodes,
        "ms_per_superstep": summarize(per_superstep),
        "writes_per_superstep": f"{summarize(writes)['median']:.1f}",
        "firestore_reads_per_superstep": summarize(reads)["median"],
        "publishes_per_superstep": summarize(publishes)["median"],
        "checkpoints_per_run": nodes + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=GRAPH_NODES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-graph-emulators-") as logs:
        firestore = start_firestore(PROJECT, Path(logs))
        try:
            pubsub = start_pubsub(PROJECT, Path(logs))
            try:
                os.environ["FIRESTORE_EMULATOR_HOST"] = firestore.endpoint
                os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.endpoint
                result = asyncio.run(measure(args.runs, args.warmup, args.nodes))
            finally:
                pubsub.stop()
        finally:
            firestore.stop()
    result["versions"] = {"python": sys.version.split()[0]}
    emit(result)


if __name__ == "__main__":
    main()
