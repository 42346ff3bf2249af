"""Seed 001's ``llm_agents.py``: LLM-powered agents with tools as the nodes of a graph.

The researcher and the analyst are agent nodes (``graph.add_agent_node``): each node task is a
run of a registered cloudagents ``Agent`` (the run machinery: budget, tool calls, guardrails,
transcript), started once with an id derived from the workflow and the task, linked to them on
the run record, and its final output is written to the node's output key. The researcher calls
a ``search`` tool, the analyst a ``calculator`` tool. The writer is a function node that calls
``Agent.run`` itself (when the prompt depends on more than one state key), and a reviewer
routes back to the writer until the draft cites its sources.

The models here are scripted ``llm_client`` functions (seed 000's contract) so the example runs
offline; give the agents a real ``ModelConfig`` (e.g. ``provider="openai"``) to use a provider.
Run: python examples/workflows/llm_agents.py
"""

import asyncio
import json
from typing import Any

from cloudagents import Agent, AgentDefinition, Budget, ModelConfig
from cloudagents.graphs import END, Graph, NodeRegistry, Orchestrator, State

SOURCES = {
    "serverless agents": ["Cloud Run scales to zero", "Pub/Sub delivers at least once"],
}


def search(query: str) -> list[str]:
    """Search the (offline) corpus."""
    return SOURCES.get(query, [])


def calculator(expression: str) -> float:
    """Evaluate + - * / on numbers."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"unsupported expression {expression!r}")
    # Only digits, operators and parentheses reach eval, with no builtins.
    return float(eval(expression, {"__builtins__": {}}))


def agent(agent_id: str, instructions: str, tools: dict[str, Any] | None = None) -> Agent:
    definition = AgentDefinition(
        id=agent_id,
        instructions=instructions,
        model=ModelConfig(provider="callable", name="scripted"),
        budget=Budget(max_tokens_per_run=5000),
    )
    return Agent(definition, tools=tools or {})


researcher_agent = agent("researcher", "Find facts with the search tool.", {"search": search})
analyst_agent = agent("analyst", "Compute figures with the calculator.", {"calculator": calculator})
writer_agent = agent("writer", "Write a short report from the findings.")


# --- scripted models: first a tool call, then an answer built from the tool result ---------------


def tool_results(request: dict[str, Any]) -> list[Any]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def researcher_llm(request: dict[str, Any]) -> dict[str, Any]:
    found = tool_results(request)
    if not found:
        call = {"id": "s1", "name": "search", "arguments": {"query": "serverless agents"}}
        return {"tool_calls": [call], "usage": {"total_tokens": 30}}
    findings = json.loads(found[-1])  # a tool result reaches the model as JSON text
    return {"done": True, "content": {"findings": findings}, "usage": {"total_tokens": 20}}


async def analyst_llm(request: dict[str, Any]) -> dict[str, Any]:
    found = tool_results(request)
    if not found:
        call = {"id": "c1", "name": "calculator", "arguments": {"expression": "2 * 60 / 4"}}
        return {"tool_calls": [call], "usage": {"total_tokens": 25}}
    minutes = float(found[-1])
    return {"done": True, "content": {"minutes_saved": minutes}, "usage": {"total_tokens": 15}}


async def writer_llm(request: dict[str, Any]) -> dict[str, Any]:
    prompt = request["messages"][-1]["content"]
    cite = "cite" in prompt
    text = "Serverless agents scale to zero and survive redelivery."
    if cite:
        text += " (sources: search)"
    return {"done": True, "content": {"draft": text}, "usage": {"total_tokens": 40}}


# --- the graph -----------------------------------------------------------------------------------

registry = NodeRegistry()


def payload(result: Any) -> dict[str, Any]:
    content = result.payload.get("content", result.payload)
    return content if isinstance(content, dict) else {"text": content}


registry.register_agent(researcher_agent, context={"llm_client": researcher_llm})
registry.register_agent(analyst_agent, context={"llm_client": analyst_llm})


@registry.register("writer")
async def writer(state: State) -> dict:
    ask = "Write the report" + (", and cite sources" if state.get("revisions") else "")
    result = await writer_agent.run(ask, context={"llm_client": writer_llm})
    return {
        "draft": payload(result)["draft"],
        "revisions": state.get("revisions", 0) + 1,
        "tokens": result.total_tokens,
    }


@registry.register("reviewer")
async def reviewer(state: State) -> dict:
    return {"decision": "approve" if "sources" in state["draft"] else "revise"}


def route_after_review(state: dict) -> str:
    return state["decision"]


graph = Graph(name="llm_research", reducers={"tokens": "add"})
graph.add_agent_node("researcher", agent="researcher", input_key="topic", output_key="research")
graph.add_agent_node("analyst", agent="analyst", input_key="question", output_key="analysis")
graph.add_node("writer")
graph.add_node("reviewer")
graph.set_entry_point("researcher")
graph.add_edge("researcher", "analyst")
graph.add_edge("analyst", "writer")
graph.add_edge("writer", "reviewer")
graph.add_conditional_edge("reviewer", route_after_review, {"approve": END, "revise": "writer"})
graph.compile()


async def main():
    orchestrator = Orchestrator(registry=registry)
    result = await orchestrator.execute(
        graph,
        initial_state={"topic": "serverless agents", "question": "How many minutes saved?"},
        workflow_id="research-1",
    )
    print(f"findings: {result['research']['findings']}")
    print(f"minutes saved: {result['analysis']['minutes_saved']}")
    print(f"draft: {result['draft']}")
    print(f"revisions={result['revisions']} writer tokens={result['tokens']}")
    # Each agent node's run is a run of the run machinery, linked to its workflow task.
    for run_id in ("research-1.0000-researcher", "research-1.0001-analyst"):
        run = await researcher_agent.driver.deps.runs.get_run(run_id)
        run = run or await analyst_agent.driver.deps.runs.get_run(run_id)
        link = run.graph_task
        print(f"{run_id}: {run.result.exit.value}, task {link.task_id} of {link.workflow_id}")


asyncio.run(main())
