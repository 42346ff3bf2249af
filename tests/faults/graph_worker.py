"""A pull worker process of the graph fault suite: ``python -m tests.faults.graph_worker
WORKER_ID`` serves every node type of ``graph_scenario`` (the agent node's too) until killed.
Every task it dispatches is published twice (``copies=2``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from cloudagents.graphs.distributed import DistributedWorker
from tests.faults.graph_scenario import FUNCTIONS, route_merge
from tests.faults.harness import PROJECT, WORKSPACE

HEARTBEAT_SECONDS = 1.0
DISPATCH_SECONDS = 8.0


async def main(worker_id: str) -> None:
    worker = DistributedWorker(
        worker_id=worker_id,
        node_types={*FUNCTIONS, "agent"},
        capacity=8,
        heartbeat_interval=HEARTBEAT_SECONDS,
        project_id=PROJECT,
        workspace=WORKSPACE,
        dispatch_timeout=DISPATCH_SECONDS,
        sweep=False,  # the orchestrator waiting on the runs tends them
        copies=2,
    )
    for name, func in FUNCTIONS.items():
        worker.register_node(name, func)
    worker.register_router("route_merge")(route_merge)
    await worker.start()
    print("ready", flush=True)
    await worker.serve()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1]))
