"""Agent nodes in process: ``Graph.add_agent_node`` runs ``Agent.run`` of a registered agent,
with a run id derived from the workflow and the task, linked to them on the run record."""

from __future__ import annotations

from typing import Any

import pytest

from cloudagents import Agent, AgentDefinition, ModelConfig
from cloudagents.domain.policy import RetryConfig
from cloudagents.domain.results import LoopExit
from cloudagents.graphs import (
    END,
    Graph,
    GraphError,
    NodeRegistry,
    Orchestrator,
    RetryPolicy,
    Worker,
)
from cloudagents.graphs.agents import child_run_id
from cloudagents.graphs.superstep import task_id


def agent(agent_id: str) -> Agent:
    return Agent(
        AgentDefinition(
            id=agent_id,
            instructions="Summarise.",
            model=ModelConfig(provider="callable", name="scripted"),
        )
    )


async def summarise(request: dict[str, Any]) -> dict[str, Any]:
    text = request["messages"][-1]["content"]
    return {"done": True, "content": {"summary": text.upper()}, "usage": {"total_tokens": 7}}


def graph(retry: RetryPolicy | None = None) -> Graph:
    g = Graph(name="agent-node")
    g.add_node("prepare", lambda state: {"topic": f"about {state['q']}"})
    g.add_agent_node(
        "summary", agent="summariser", input_key="topic", output_key="summary", retry=retry
    )
    g.set_entry_point("prepare")
    g.add_edge("prepare", "summary")
    g.add_conditional_edge("summary", lambda state: "end", {"end": END})
    return g


async def test_an_agent_node_is_a_linked_run_and_its_output_the_update() -> None:
    registry = NodeRegistry()
    summariser = registry.register_agent(agent("summariser"), context={"llm_client": summarise})
    result = await Orchestrator(registry=registry).execute(
        graph(), {"q": "clouds"}, workflow_id="wf-agent-1"
    )
    assert result["summary"] == {"summary": "ABOUT CLOUDS"}
    run_id = child_run_id("wf-agent-1", task_id(1, "summary"))
    assert run_id == "wf-agent-1.0001-summary"
    run = await summariser.driver.deps.runs.get_run(run_id)
    assert run is not None and run.result is not None
    assert run.result.exit is LoopExit.SATISFIED
    assert run.graph_task is not None
    assert run.graph_task.model_dump() == {
        "workflow_id": "wf-agent-1",
        "task_id": "0001-summary",
        "node": "summary",
        "attempt": 1,
    }


async def test_a_failed_run_fails_the_node_and_each_retry_is_a_new_run() -> None:
    calls: list[str] = []

    async def flaky(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request["messages"][-1]["content"])
        if len(calls) < 2:
            raise ValueError("the model is down")  # the run ends ERROR
        return await summarise(request)

    registry = NodeRegistry()
    summariser = agent("summariser")
    summariser.definition = summariser.definition.model_copy(
        update={"retry": RetryConfig(max_attempts=1)}
    )
    registry.register_agent(summariser, context={"llm_client": flaky})
    retry = RetryPolicy(max_attempts=2, backoff_seconds=0)
    result = await Orchestrator(registry=registry).execute(
        graph(retry), {"q": "rain"}, workflow_id="wf-agent-2"
    )
    assert result["summary"] == {"summary": "ABOUT RAIN"}
    first = await summariser.driver.deps.runs.get_run("wf-agent-2.0001-summary")
    second = await summariser.driver.deps.runs.get_run("wf-agent-2.0001-summary.a2")
    assert first is not None and first.result is not None
    assert first.result.exit is not LoopExit.SATISFIED
    assert second is not None and second.graph_task is not None
    assert second.graph_task.attempt == 2


async def test_without_retries_a_failed_run_fails_the_workflow_naming_the_run() -> None:
    async def never(request: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("the model is down")

    registry = NodeRegistry()
    summariser = agent("summariser")
    summariser.definition = summariser.definition.model_copy(
        update={"retry": RetryConfig(max_attempts=1)}
    )
    registry.register_agent(summariser, context={"llm_client": never})
    with pytest.raises(Exception, match=r"agent run wf-agent-3\.0001-summary ended ERROR"):
        await Orchestrator(registry=registry).execute(graph(), {"q": "x"}, workflow_id="wf-agent-3")


def test_an_agent_node_names_its_agent_in_the_graph_and_compile_checks_it() -> None:
    compiled = graph().compile()
    spec = compiled.nodes["summary"]
    assert spec.node_type == "agent" and spec.writes == ["summary"]
    assert spec.agent is not None and spec.agent.agent == "summariser"
    assert '"agent":{"agent":"summariser"' in compiled.to_json()
    assert '"agent"' not in compiled.to_json().split('"prepare"', 1)[1].split("}", 1)[0]
    with pytest.raises(GraphError, match="no agent 'summariser' registered"):
        graph().compile(NodeRegistry())


def test_child_run_ids_are_valid_run_ids_however_long_the_workflow_id() -> None:
    long = child_run_id("wf/" + "x" * 200, "0003-node", 3)
    assert len(long) <= 128 and "/" not in long
    assert long == child_run_id("wf/" + "x" * 200, "0003-node", 3)
    assert long != child_run_id("wf/" + "x" * 200, "0003-node", 2)


async def test_with_workers_an_agent_node_runs_its_agent_and_the_rest_on_workers() -> None:
    registry = NodeRegistry()
    registry.register_agent(agent("summariser"), context={"llm_client": summarise})
    worker = Worker({"prepare"}, capacity=1)
    worker.register("prepare")(lambda state: {"topic": f"about {state['q']}"})
    g = Graph(name="agent-node-workers")
    g.add_node("prepare")
    g.add_agent_node("summary", agent="summariser", input_key="topic", output_key="summary")
    g.set_entry_point("prepare")
    g.add_edge("prepare", "summary")
    g.set_finish_point("summary")
    await worker.start()
    try:
        # Compiled without the registry: compile(registry) wants every function registered.
        orchestrator = Orchestrator(registry=registry, workers=[worker])
        result = await orchestrator.execute(g.compile(), {"q": "fog"})
    finally:
        await worker.stop()
    assert result["summary"] == {"summary": "ABOUT FOG"}
