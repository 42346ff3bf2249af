"""Seed 001's Quick Start, unchanged but for the import path.

``distributed_agents`` became ``cloudagents.graphs``.

Run: python examples/workflows/simple_workflow.py
"""

import asyncio

from cloudagents.graphs import Graph, NodeRegistry, Orchestrator, State

# Create registry and register node functions
registry = NodeRegistry()


@registry.register("researcher")
async def researcher(state: State) -> dict:
    query = state.get("query", "")
    return {"findings": [f"Finding about {query}"], "sources": ["source1.com"]}


@registry.register("writer")
async def writer(state: State) -> dict:
    findings = state.get("findings", [])
    return {"report": f"Report with {len(findings)} findings"}


# Create workflow graph
graph = Graph(name="research_workflow")
graph.add_node("researcher")
graph.add_node("writer")
graph.set_entry_point("researcher")
graph.add_edge("researcher", "writer")
graph.set_finish_point("writer")
graph.compile()


# Execute
async def main():
    orchestrator = Orchestrator(registry=registry)
    result = await orchestrator.execute(graph, initial_state={"query": "AI trends"})
    print(result.get("report"))


asyncio.run(main())
