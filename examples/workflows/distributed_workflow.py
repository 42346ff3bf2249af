"""Seed 001's distributed execution: an orchestrator and workers on different machines.

The seed's Redis URL becomes the GCP project and workspace: the orchestrator stores the compiled
graph in Firestore by its hash and publishes each node task on its node type's Pub/Sub topic;
workers pull the types they serve, lease each task on its Firestore document, and save the
result; the last result of a superstep advances the run.

Against the local emulators: start them (``make up``, or ``python -m cloudagents.local.emulators``)
and export the ``*_EMULATOR_HOST`` variables they print (or let ``.local/state.json`` be read).
The node-type topics are created on the emulators on first use.

Run everything in one process (two workers of different node types and the orchestrator):
    python examples/workflows/distributed_workflow.py
or one role per machine (same project and workspace):
    python examples/workflows/distributed_workflow.py worker researcher
    python examples/workflows/distributed_workflow.py worker writer
    python examples/workflows/distributed_workflow.py orchestrator
"""

import json
import os
import sys
from pathlib import Path

_STATE = Path(
    os.environ.get("CLOUDAGENTS_STATE", Path(__file__).resolve().parents[2] / ".local/state.json")
)
if "PUBSUB_EMULATOR_HOST" not in os.environ and _STATE.is_file():
    for _key, _value in json.loads(_STATE.read_text()).get("env", {}).items():
        if _key.endswith("_EMULATOR_HOST"):
            os.environ.setdefault(_key, _value)

import asyncio  # noqa: E402

from cloudagents.graphs import Graph  # noqa: E402
from cloudagents.graphs.distributed import (  # noqa: E402
    DistributedOrchestrator,
    DistributedWorker,
)

PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "my-gcp-project")
WORKSPACE = os.environ.get("CLOUDAGENTS_WORKSPACE", "workflows")

# The Quick Start's graph: researcher -> writer.
graph = Graph(name="research_workflow")
graph.add_node("researcher")
graph.add_node("writer")
graph.set_entry_point("researcher")
graph.add_edge("researcher", "writer")
graph.set_finish_point("writer")
graph.compile()


def make_worker(node_type: str) -> DistributedWorker:
    """Worker (machine 2, 3, ...): serves one node type here; a worker may serve several."""
    worker = DistributedWorker(
        worker_id=f"worker-{node_type}",
        node_types={node_type},
        capacity=4,
        heartbeat_interval=10.0,
        project_id=PROJECT,
        workspace=WORKSPACE,
    )
    if node_type == "researcher":

        @worker.register("researcher")
        async def researcher(state):
            return {"findings": [f"Finding about {state.get('query', '')}"], "sources": ["s1"]}

    else:

        @worker.register("writer")
        async def writer(state):
            return {"report": f"Report with {len(state.get('findings', []))} findings"}

    return worker


async def orchestrate():
    """Orchestrator (machine 1)."""
    orchestrator = DistributedOrchestrator(project_id=PROJECT, workspace=WORKSPACE)
    await orchestrator.connect()
    try:
        result = await orchestrator.execute(graph, initial_state={"query": "AI trends"})
        print(result.get("report"))
        status = await orchestrator.get_workflow_status(result.workflow_id)
        print(f"status={status.status} supersteps={status.step} graph={status.graph_hash[:12]}")
        for worker in await orchestrator.list_workers():
            print(f"worker {worker.worker_id} serves {','.join(worker.node_types)}")
    finally:
        await orchestrator.close()


async def all_in_one():
    workers = [make_worker("researcher"), make_worker("writer")]
    for worker in workers:
        await worker.start()
    try:
        await orchestrate()
    finally:
        for worker in workers:
            await worker.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["worker"] and len(args) == 2:
        asyncio.run(make_worker(args[1]).serve())
    elif args == ["orchestrator"]:
        asyncio.run(orchestrate())
    else:
        asyncio.run(all_in_one())
