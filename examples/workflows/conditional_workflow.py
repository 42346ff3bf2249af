"""Seed 001's conditional routing: a writer <-> reviewer loop that ends when the draft is good.

The graph is the seed's (import path changed); the node functions converge: each revision
adds a section, and the reviewer approves once there are three.
Run: python examples/workflows/conditional_workflow.py
"""

import asyncio

from cloudagents.graphs import Graph, NodeRegistry, Orchestrator, State
from cloudagents.graphs.core.graph import END  # noqa: F401  (the seed's import path)

registry = NodeRegistry()


@registry.register("writer")
async def writer(state: State) -> dict:
    sections = [*state.get("sections", []), f"section {len(state.get('sections', [])) + 1}"]
    return {"sections": sections}


@registry.register("reviewer")
async def reviewer(state: State) -> dict:
    decision = "approve" if len(state["sections"]) >= 3 else "revise"
    return {"decision": decision, "reviews": state.get("reviews", 0) + 1}


@registry.register("publisher")
async def publisher(state: State) -> dict:
    return {
        "report": f"Published after {state['reviews']} reviews: " + ", ".join(state["sections"])
    }


graph = Graph(name="review_workflow")
graph.add_node("writer")
graph.add_node("reviewer")
graph.add_node("publisher")

graph.set_entry_point("writer")
graph.add_edge("writer", "reviewer")


# Route based on review decision
def route_after_review(state: dict) -> str:
    return state.get("decision", "revise")


graph.add_conditional_edge(
    "reviewer",
    route_after_review,
    {
        "approve": "publisher",
        "revise": "writer",  # Loop back
    },
)

graph.set_finish_point("publisher")
graph.compile()


async def main():
    orchestrator = Orchestrator(registry=registry)
    result = await orchestrator.execute(graph, initial_state={}, workflow_id="review-1")
    print(result.get("report"))
    status = orchestrator.get_workflow_status("review-1")
    print(f"status={status.status} supersteps={status.step} graph={status.graph_hash[:12]}")


asyncio.run(main())
