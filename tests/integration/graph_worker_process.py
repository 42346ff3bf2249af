"""A ``DistributedWorker`` process for the SIGKILL tests: ``python -m
tests.integration.graph_worker_process WORKER_ID [hang]`` serves node type ``slow``; with
``hang`` the node prints ``started`` and never returns (the test kills the process)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from cloudagents.graphs import State
from cloudagents.graphs.distributed import DistributedWorker


async def main(worker_id: str, hang: bool) -> None:
    worker = DistributedWorker(worker_id=worker_id, node_types={"slow"}, heartbeat_interval=0.3)

    @worker.register("slow")
    async def slow(state: State) -> dict[str, Any]:
        if hang:
            print("started", flush=True)
            await asyncio.Event().wait()
        return {"done_by": worker_id}

    await worker.start()
    print("ready", flush=True)
    await worker.serve()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("cloudagents").setLevel(logging.DEBUG)
    asyncio.run(main(sys.argv[1], sys.argv[2:] == ["hang"]))
